//! The `memory` state store against the state-store contract, on tokio's paused clock (the store
//! keeps time with tokio's, so its TTLs run out without the test waiting). The bus's own tests are
//! next to it in `src/backends/memory.rs`.

use wsm::backends::memory::MemoryStateStore;

#[path = "support/state_contract.rs"]
mod state_contract;

/// A fresh store, for the contract.
async fn contract_store() -> state_contract::Subject {
    state_contract::Subject::new(MemoryStateStore::new(), ())
}

state_contract::state_contract_tests!(
    #[tokio::test(start_paused = true)]
    contract_store
);
