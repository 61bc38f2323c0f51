//! Views of a SQL node from a watched directory (seed 6.2 and 7.2: a view
//! pushed by configuration relieves a common subquery without a restart).
//!
//! Each `*.toml` file of the directory defines one view:
//!
//! ```toml
//! name = "disk_usage"
//! description = "Per filesystem: size, free space and percent used"
//! prewarm = true          # computed when each generation arrives
//! sql = "SELECT machineip, mountp, 100 - (100*bavail)/blocks AS pct_used FROM filesystem WHERE blocks > 0"
//! ```
//!
//! [`ViewsService`] re-reads the directory every `poll` and hands every
//! file to [`SqlNode::set_views`] when any changed; the node keeps the
//! previous version of a file that does not read, parse or plan (shown in
//! `fleet_views` with the reason). Views marked `prewarm` are computed by a
//! [`GenerationHook`] as each generation is installed; the others on
//! first use. Either way at most once per generation.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use fleetsql_model::Generation;
use fleetsql_sqlnode::{
    GenerationHook, GenerationHookHandle, SqlNode, ViewDefinition, ViewFile, ViewFileError,
};
use tokio::task::JoinHandle;

/// Where the views come from.
#[derive(Debug, Clone)]
pub struct ViewsConfig {
    pub dir: PathBuf,
    /// How often the directory is re-read.
    pub poll: Duration,
}

impl ViewsConfig {
    pub fn new(dir: impl Into<PathBuf>) -> ViewsConfig {
        ViewsConfig {
            dir: dir.into(),
            poll: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ViewsError {
    #[error(
        "cannot read the views directory {}: {source}; create it or fix views_dir",
        dir.display()
    )]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// The directory's `*.toml` files and their text, by path; a file that
/// cannot be read is there with its error.
type Contents = BTreeMap<PathBuf, Result<String, String>>;

fn read_contents(dir: &Path) -> Result<Contents, ViewsError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ViewsError::Dir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut contents = Contents::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            let text = std::fs::read_to_string(&path).map_err(|e| e.to_string());
            contents.insert(path, text);
        }
    }
    Ok(contents)
}

/// Reads one view definition from TOML text.
pub fn parse_view(text: &str) -> Result<ViewDefinition, ViewFileError> {
    toml::from_str::<ViewDefinition>(text).map_err(|e| {
        ViewFileError(format!(
            "not a view definition (name, sql, optional prewarm and description): {}",
            e.message()
        ))
    })
}

fn view_files(contents: &Contents) -> Vec<ViewFile> {
    contents
        .iter()
        .map(|(path, text)| ViewFile {
            file: path.display().to_string(),
            definition: match text {
                Ok(text) => parse_view(text),
                Err(e) => Err(ViewFileError(format!("cannot read the file: {e}"))),
            },
        })
        .collect()
}

/// Reads `dir` and gives its views to `node` (for tests and one-off
/// loads; [`ViewsService`] keeps doing it).
pub async fn load_views(node: &SqlNode, dir: &Path) -> Result<(), ViewsError> {
    let contents = read_contents(dir)?;
    node.set_views(view_files(&contents));
    node.check_views().await;
    Ok(())
}

/// Computes the `prewarm` views over each generation as it is installed.
#[derive(Debug)]
struct PrewarmHook {
    node: Weak<SqlNode>,
}

impl GenerationHook for PrewarmHook {
    fn name(&self) -> &str {
        "views-prewarm"
    }

    fn wanted_tables(&self) -> BTreeSet<String> {
        self.node
            .upgrade()
            .map(|node| node.prewarm_view_tables())
            .unwrap_or_default()
    }

    fn on_generation(&self, generation: &Arc<Generation>) {
        let Some(node) = self.node.upgrade() else {
            return;
        };
        // Hooks run on the blocking pool, where waiting on the runtime is
        // allowed and holds up no worker thread.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.block_on(node.prewarm_views(generation));
        }
    }
}

/// The running views of one node; dropping it stops watching.
#[derive(Debug)]
pub struct ViewsService {
    task: Option<JoinHandle<()>>,
    hook: Option<GenerationHookHandle>,
}

impl Drop for ViewsService {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl ViewsService {
    /// Loads the directory (an unreadable one is an error: the
    /// configuration names a directory that is not there) and keeps
    /// watching it.
    pub fn start(node: Arc<SqlNode>, config: ViewsConfig) -> Result<ViewsService, ViewsError> {
        let contents = read_contents(&config.dir)?;
        node.set_views(view_files(&contents));
        let hook = node.add_generation_hook(Arc::new(PrewarmHook {
            node: Arc::downgrade(&node),
        }));
        let task = tokio::spawn(watch(node, config, contents));
        Ok(ViewsService {
            task: Some(task),
            hook: Some(hook),
        })
    }

    /// Stops watching and waits for a prewarm in progress.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        if let Some(hook) = self.hook.take() {
            hook.remove().await;
        }
    }
}

async fn watch(node: Arc<SqlNode>, config: ViewsConfig, mut last: Contents) {
    let mut unreadable = false;
    loop {
        // Views not planned yet (no generation had their tables) are
        // planned once one does.
        node.check_views().await;
        tokio::time::sleep(config.poll).await;
        match read_contents(&config.dir) {
            Ok(contents) => {
                unreadable = false;
                if contents != last {
                    tracing::info!(dir = %config.dir.display(), files = contents.len(), "views directory changed; reloading");
                    node.set_views(view_files(&contents));
                    node.check_views().await;
                    last = contents;
                }
            }
            Err(e) => {
                if !unreadable {
                    tracing::warn!(error = %e, "keeping the views loaded before");
                }
                unreadable = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Whoever can write the views directory (issue 17 item 7): a
        /// random or damaged file is a definition or a refusal, never a
        /// panic.
        #[test]
        fn mutated_view_files_are_read_or_refused(
            at in proptest::prelude::any::<usize>(),
            insert in "[\\[\\]{}=\"'.,#a-z0-9\n ]{0,8}",
            delete in 0..6usize,
            random in "\\PC{0,200}",
        ) {
            let _ = parse_view(&random);
            let valid = "name = \"big_disks\"\nsql = \"SELECT hostname FROM filesystem WHERE used > 0.9\"\nprewarm = true\n";
            let chars: Vec<char> = valid.chars().collect();
            let at = at % chars.len();
            let end = (at + delete).min(chars.len());
            let text: String = chars[..at]
                .iter()
                .copied()
                .chain(insert.chars())
                .chain(chars[end..].iter().copied())
                .collect();
            let _ = parse_view(&text);
        }
    }

    #[test]
    fn a_definition_reads_and_unknown_keys_are_refused() {
        let view = parse_view("name = \"v\"\nsql = \"SELECT 1\"\nprewarm = true\n").unwrap();
        assert_eq!(view.name, "v");
        assert!(view.prewarm);
        let e = parse_view("name = \"v\"\nsql = \"SELECT 1\"\nprewarn = true\n").unwrap_err();
        assert!(e.0.contains("prewarn"), "{e}");
        assert!(parse_view("name = \"v\"").is_err());
    }
}
