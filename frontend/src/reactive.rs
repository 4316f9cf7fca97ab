//! The page's reactive bindings, each through one erased type.
//!
//! Leptos compiles its rendering code once per closure type: a `move || …` child or attribute
//! costs the page a copy of the effect, mount and rebuild code (about 1.5 KB of wasm each). So
//! every reactive text and attribute here is a `Signal<String>` and every part that comes and
//! goes is a closure over an `Arc<dyn Fn() -> AnyView>` built in one non-generic function:
//! that code is then compiled once for the whole page, and a binding costs only its own body.

use std::sync::Arc;

use leptos::prelude::*;

/// A reactive text or attribute value.
pub fn text(f: impl Fn() -> String + Send + Sync + 'static) -> Signal<String> {
    Signal::derive(f)
}

/// A part of the page rebuilt whenever what `f` reads changes.
pub fn dynamic(f: impl Fn() -> AnyView + Send + Sync + 'static) -> AnyView {
    erased(Arc::new(f))
}

/// Items rendered in order, rebuilt in place (a row keeps its DOM node, so an input keeps its
/// focus) whenever what `f` reads changes. The lists here are short: diffing by position
/// costs less than keyed diffing's code.
pub fn list(f: impl Fn() -> Vec<AnyView> + Send + Sync + 'static) -> AnyView {
    dynamic(move || f().into_any())
}

/// Not generic: the closure below is one type, whatever `f` is.
fn erased(f: Arc<dyn Fn() -> AnyView + Send + Sync>) -> AnyView {
    (move || f()).into_any()
}
