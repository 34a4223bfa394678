//! Opening an input: a path, a `.gz` path (decompressed while reading) or
//! `-` (standard input), with the checks an operator wants before a long
//! run: not a directory, readable, not empty, not binary.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::InputError;
use crate::model::describe_io;

/// Where the records come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stdin,
    File(PathBuf),
}

impl Source {
    pub fn from_arg(arg: &Path) -> Source {
        if arg.as_os_str() == "-" {
            Source::Stdin
        } else {
            Source::File(arg.to_path_buf())
        }
    }

    /// The name used in messages: the path, or `<stdin>`.
    pub fn display(&self) -> String {
        match self {
            Source::Stdin => "<stdin>".to_string(),
            Source::File(p) => p.display().to_string(),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::Stdin => None,
            Source::File(p) => Some(p),
        }
    }

    /// True for a path whose name ends in `.gz` (read decompressed).
    pub fn is_gzip(&self) -> bool {
        matches!(self, Source::File(p) if has_gz_extension(p))
    }

    /// Opens the byte stream (decompressed for `.gz`).
    pub fn open(&self) -> Result<Box<dyn Read + Send>, InputError> {
        match self {
            Source::Stdin => Ok(Box::new(io::stdin())),
            Source::File(path) => {
                let name = path.display().to_string();
                let meta = std::fs::metadata(path).map_err(|e| InputError::Open {
                    path: name.clone(),
                    reason: describe_io(&e),
                })?;
                if meta.is_dir() {
                    return Err(InputError::Open {
                        path: name,
                        reason: "is a directory, not a CSV file".into(),
                    });
                }
                if meta.is_file() && meta.len() == 0 {
                    return Err(InputError::Empty { path: name });
                }
                let file = File::open(path).map_err(|e| InputError::Open {
                    path: name.clone(),
                    reason: describe_io(&e),
                })?;
                if has_gz_extension(path) {
                    Ok(Box::new(MultiGzDecoder::new(io::BufReader::with_capacity(
                        64 * 1024,
                        file,
                    ))))
                } else {
                    Ok(Box::new(file))
                }
            }
        }
    }
}

fn has_gz_extension(p: &Path) -> bool {
    p.extension()
        .map(|e| e.eq_ignore_ascii_case("gz"))
        .unwrap_or(false)
}

/// The default path of an output file beside the input: `export.csv` and
/// `export.csv.gz` give `export.<suffix>.csv`.
pub fn beside(input: &Path, suffix: &str) -> PathBuf {
    let mut name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for ext in [".gz", ".csv", ".tsv"] {
        if name.len() > ext.len() && name[name.len() - ext.len()..].eq_ignore_ascii_case(ext) {
            name.truncate(name.len() - ext.len());
        }
    }
    input.with_file_name(format!("{name}.{suffix}.csv"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_go_beside_the_input() {
        assert_eq!(
            beside(Path::new("/d/export.csv"), "results"),
            Path::new("/d/export.results.csv")
        );
        assert_eq!(
            beside(Path::new("export.csv.gz"), "retry"),
            Path::new("export.retry.csv")
        );
        assert_eq!(
            beside(Path::new("dump.TXT"), "results"),
            Path::new("dump.TXT.results.csv")
        );
        assert_eq!(
            beside(Path::new("tab.tsv"), "results"),
            Path::new("tab.results.csv")
        );
        assert_eq!(
            beside(Path::new("x.retry.csv"), "results"),
            Path::new("x.retry.results.csv")
        );
    }
}
