//! Writes the named seeds of the fuzz corpus (`fuzz/checks/seeds.rs`) into `fuzz/corpus/<target>/`,
//! replacing the files of the same names: `cargo run --example fuzz_seeds`. `scripts/test.sh`
//! fails (`tests/fuzz_corpus.rs`) when a seed is missing or stale.

#[path = "../fuzz/checks/correlation.rs"]
mod correlation_check;
#[path = "../fuzz/checks/process.rs"]
mod process_check;
#[path = "../fuzz/checks/seeds.rs"]
mod seeds;
#[path = "../tests/support/mod.rs"]
mod support;

// The process checks call `Process` through `crate::host`, the tests' scripted host.
#[allow(unused_imports)]
use support::host;

fn main() {
    for (target, seeds) in seeds::all() {
        let dir = seeds::corpus_dir(target);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("fuzz_seeds: cannot create {}: {e}", dir.display());
            std::process::exit(1);
        }
        for (name, bytes) in &seeds {
            let path = dir.join(name);
            if let Err(e) = std::fs::write(&path, bytes) {
                eprintln!("fuzz_seeds: cannot write {}: {e}", path.display());
                std::process::exit(1);
            }
        }
        println!(
            "fuzz_seeds: {} seeds written to {}",
            seeds.len(),
            dir.display()
        );
    }
}
