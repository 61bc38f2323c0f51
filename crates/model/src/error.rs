use arrow::datatypes::DataType;

/// Errors of the data model; each says which table or column was at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "column `{column}` of table `{table}` is {existing} in rows already present but {incoming} in the new rows; \
         publish it with one type everywhere (integers and floats may mix, they widen to float)"
    )]
    SchemaConflict {
        table: String,
        column: String,
        existing: DataType,
        incoming: DataType,
    },
    #[error("invalid table name `{name}`: {reason}")]
    InvalidTableName { name: String, reason: String },
    #[error("invalid column name `{name}`: {reason}")]
    InvalidColumnName { name: String, reason: String },
    #[error("arrow error in table `{table}`: {source}")]
    Arrow {
        table: String,
        #[source]
        source: arrow::error::ArrowError,
    },
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    pub(crate) fn arrow(table: &str, source: arrow::error::ArrowError) -> Self {
        ModelError::Arrow {
            table: table.to_string(),
            source,
        }
    }
}
