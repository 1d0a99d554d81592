module trustwatch/tests/go

go 1.22
