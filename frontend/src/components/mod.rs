//! One component per file, named for what it shows.

pub mod cart;
pub mod catalog;
pub mod checkout;
pub mod fault_panel;
pub mod saga_list;
pub mod service_state;
pub mod timeline;
