//! The data model every tier shares.
//!
//! A [`Table`] is a set of Arrow record batches with one schema. A
//! [`Generation`] is an immutable snapshot one node made at one moment: its
//! tables plus [`Visibility`], the account of which machines and clusters the
//! snapshot covers and how old their data are. Generations flow upwards
//! (agent → cluster proxy → TLA → SQL node); at each tier the children's
//! generations are merged table by table with [`merge_tables`], which unifies
//! schemas (missing columns become null, integers meeting floats widen to
//! float, anything else is a [`ModelError::SchemaConflict`]).
//!
//! Rows published on a machine carry origin columns ([`origin`]) so that
//! every answer can say where each row came from.

pub mod duration;
mod error;
mod generation;
pub mod json;
mod names;
pub mod origin;
mod panic;
pub mod parse;
mod schema;
mod table;
mod time;

pub use error::{ModelError, Result};
pub use generation::{
    ChildStatus, ClusterVisibility, Generation, GenerationMeta, TableVisibility, Visibility,
};
pub use names::{MAX_NAME_LEN, validate_column_name, validate_table_name};
pub use panic::panic_message;
pub use schema::{conform_batch, unify_fields, unify_schemas};
pub use table::{Table, batch_data_bytes, merge_tables};
pub use time::now_ms;
