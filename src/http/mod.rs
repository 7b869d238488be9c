//! HTTP on the shared listener: sans-io head parsing, routing, the upgrade
//! checks, the publish body, and canned responses.

pub mod answers;
pub mod client_addr;
pub mod framing;
pub mod head;
pub mod publish;
pub mod response;
pub mod router;
pub mod upgrade;
