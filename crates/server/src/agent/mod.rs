//! The server's side of the agent: the agent crate's queue and runtime interfaces implemented
//! on the store ([`queue::StoreQueue`], [`runtime::StoreRuntime`]), used by the embedded agent
//! directly and by the agent API (`api/agent.rs`) on behalf of remote agents.

pub mod queue;
pub mod registry;
pub mod runtime;
