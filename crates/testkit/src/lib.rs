//! Test harness for fcgate: the real and fake backends a test starts, and the client it drives them with.
//!
//! - [`php`]: a real php-fpm or php-cgi, started in a tempdir and killed (whole process group) on drop.
//! - [`process`]: any such child program (the interop suite's foreign FastCGI apps too).
//! - [`backend`]: the project's instrumented FastCGI backend, driven per request by its query string.
//! - [`relay`]: a TCP/unix relay that counts the connections a gateway opens to a backend and
//!   watches the FastCGI requests on each (multiplexing, id reuse, aborts).
//! - [`http`]: a small HTTP/1.1 and HTTP/2 client, a bounded load runner, a raw byte exchange
//!   and a slow reader.
//! - [`pattern_bytes`]: the deterministic body both backends send for `size=N`.
//! - [`wait_until`]: polls a condition another task or process makes true, with a deadline.
//!
//! Everything here panics with a readable message when the environment is broken (a backend that
//! does not start, a port that cannot be bound): a harness failure must fail the test, loudly.

pub mod backend;
pub mod http;
mod listen;
mod pattern;
pub mod pebble;
pub mod php;
pub mod process;
pub mod relay;
pub mod tls;
mod wait;

pub use listen::{non_loopback_address, php_fixture_docroot, Listen};
pub use pattern::{is_pattern, pattern_bytes, pattern_from};
pub use wait::wait_until;
