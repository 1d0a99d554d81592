//! The `trustwatch` binary: see [`trustwatch::cli`].

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(trustwatch::cli::main());
}
