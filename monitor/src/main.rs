//! The `trustwatch` binary: see [`trustwatch::cli`].

fn main() {
    std::process::exit(trustwatch::cli::main());
}
