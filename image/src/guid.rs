//! GUIDs live in the shared GPT crate (the data-partition grower in init uses them too).

pub use nomados_gpt::Guid;
