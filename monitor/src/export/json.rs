//! JSON Lines output, one object per connection, nested keys in Elastic Common Schema form.
