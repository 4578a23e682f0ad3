//! Where a run's results go, and what ties them to their inputs.
//!
//! The report is checked for before the run starts: its folder must exist
//! and be writable, and the path must not be a directory or a symbolic
//! link (outputs are never written through one). A report left by an
//! earlier run is removed at the start, so that a run that fails never
//! leaves an old report beside its own, newer trade log. The report is
//! then written whole or not at all: into a new file beside it, renamed
//! into place.
//!
//! Every report carries its provenance: Bistoury's version, the mode, the
//! synthetic market's seed, and SHA-256 hashes of the effective
//! configuration (output directory and the model's cache mode aside: they
//! change no figure) and of
//! every data file, so a saved report can be tied to what made it
//! (`sha256sum` checks a data file).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use agent_trader::trade_log::{clear_output_path, create_output_file};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{BistouryConfig, DataSource};
use crate::report::Report;
use crate::run::Mode;

/// A data file a run read.
#[derive(Debug, Clone, Serialize)]
pub struct DataFile {
    /// As configured (resolved against the config file's folder).
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of its content, hex.
    pub sha256: String,
}

/// What a report was made from.
#[derive(Debug, Clone, Serialize)]
pub struct Provenance {
    /// `bistoury --version`.
    pub bistoury_version: &'static str,
    /// How the agents ran.
    pub mode: Mode,
    /// The synthetic market's seed (none for file data).
    pub seed: Option<u64>,
    /// SHA-256 of the effective configuration (keys sorted, as JSON,
    /// `run.output_dir` and `signals.llm.cache_mode` left out), hex.
    pub config_sha256: String,
    /// The data files read.
    pub data_files: Vec<DataFile>,
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 and length of a file's content.
fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    let mut bytes = 0;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buffer[..n]);
    }
    Ok((bytes, hex(&hasher.finalize())))
}

impl Provenance {
    /// The provenance of a run of `config` in `mode`.
    pub fn of(config: &BistouryConfig, mode: Mode) -> std::io::Result<Self> {
        let mut effective = config.effective.clone();
        if let Some(run) = effective.get_mut("run").and_then(|r| r.as_object_mut()) {
            run.remove("output_dir");
        }
        // Replaying a recording gives the recording's figures.
        if let Some(llm) = (effective.get_mut("signals"))
            .and_then(|s| s.get_mut("llm"))
            .and_then(|l| l.as_object_mut())
        {
            llm.remove("cache_mode");
        }
        let text = serde_json::to_string(&effective).map_err(std::io::Error::other)?;
        let source = config
            .data
            .source()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.join("; ")))?;
        let (data_files, seed) = match &source {
            DataSource::File(file) => {
                let (bytes, sha256) = hash_file(&file.path)?;
                let data = DataFile {
                    path: file.path.clone(),
                    bytes,
                    sha256,
                };
                (vec![data], None)
            }
            DataSource::Synthetic(spec) => (Vec::new(), Some(spec.seed)),
            DataSource::Live(_) => (Vec::new(), None),
        };
        Ok(Self {
            bistoury_version: env!("CARGO_PKG_VERSION"),
            mode,
            seed,
            config_sha256: hex(&Sha256::digest(text.as_bytes())),
            data_files,
        })
    }
}

/// `report.json`: the provenance, then the report's figures.
#[derive(Serialize)]
struct ReportFile<'a> {
    provenance: &'a Provenance,
    #[serde(flatten)]
    report: &'a Report,
}

/// The report's place, claimed before the run (see the module docs).
#[derive(Debug)]
pub struct ReportPath {
    path: PathBuf,
    partial: PathBuf,
}

impl ReportPath {
    /// Checks `path` can take the report; removes a report an earlier run
    /// left there. The error says what is wrong with it.
    pub fn claim(path: &Path) -> Result<Self, String> {
        let show = path.display();
        let folder = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !folder.is_dir() {
            return Err(format!(
                "{show}: folder {} does not exist",
                folder.display()
            ));
        }
        clear_output_path(path).map_err(|e| format!("{show}: {e}"))?;
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        let partial = path.with_file_name(name);
        // Proves the folder writable now rather than after the run.
        create_output_file(&partial).map_err(|e| format!("{show}: cannot be written: {e}"))?;
        Ok(Self {
            path: path.to_path_buf(),
            partial,
        })
    }

    /// Where it goes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the report and its provenance, whole or not at all.
    pub fn write(&self, report: &Report, provenance: &Provenance) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(&ReportFile { provenance, report })
            .map_err(std::io::Error::other)?;
        let mut file = create_output_file(&self.partial)?;
        file.write_all(json.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&self.partial, &self.path)
    }
}

/// Trade-log rows `report.html` shows (the rest are in the CSV).
const HTML_TRADE_ROWS: usize = 2_000;

impl ReportPath {
    /// Writes the charts beside the report: `equity.svg`, one
    /// `pnl-<SYMBOL>.svg` per market, and `report.html` (the table, the
    /// charts and the trade log in one page); returns the page's path.
    pub fn write_charts(&self, report: &Report, trade_log: &Path) -> std::io::Result<PathBuf> {
        let folder = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut charts = Vec::with_capacity(report.curves.len());
        for curve in &report.curves {
            let svg = crate::charts::svg(curve);
            let file = folder.join(format!("{}.svg", curve.name));
            create_output_file(&file)?.write_all(svg.as_bytes())?;
            charts.push(svg);
        }
        // A run that failed early may have written no trade log.
        let trades = std::fs::read_to_string(trade_log).unwrap_or_default();
        let page = crate::charts::html(&report.to_table(), &charts, &trades, HTML_TRADE_ROWS);
        let html = folder.join("report.html");
        create_output_file(&html)?.write_all(page.as_bytes())?;
        Ok(html)
    }
}

impl Drop for ReportPath {
    fn drop(&mut self) {
        // Gone already once the report was written.
        let _ = std::fs::remove_file(&self.partial);
    }
}
