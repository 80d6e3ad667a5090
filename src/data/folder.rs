//! Building file lists and labels from folders and CSV files (spec §2.3, §2.9).
//!
//! Folders are read sorted (class folders and the files inside them) so that label indices and
//! dataset order are the same on every machine; a label CSV keeps its own row order, as fastai
//! 0.7 did, because `val_idxs` index its rows. Hidden entries and
//! files without an image extension are skipped and counted (rough edge 10). Validation and
//! labelled-test splits are labelled with the *training* class list, and a class folder present
//! on one side only is an error (rough edge 9).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::image::decode::has_image_extension;
use crate::{Error, Result};

/// What a folder scan left out, so the Python layer can report it.
#[derive(Clone, Debug, Default)]
pub struct ScanReport {
    /// Entries whose name starts with a dot (`.DS_Store`, `.ipynb_checkpoints`, ...).
    pub hidden: usize,
    /// Files without an image extension (`Thumbs.db`, `labels.csv`, ...), sub-folders of
    /// class folders, and entries that are not regular files (pipes, sockets, devices).
    pub non_image: usize,
    /// The first few of those, relative to the scanned root, for messages.
    pub examples: Vec<String>,
}

impl ScanReport {
    fn non_image(&mut self, path: &Path, root: &Path) {
        self.non_image += 1;
        if self.examples.len() < 5 {
            let rel = path.strip_prefix(root).unwrap_or(path);
            self.examples.push(rel.to_string_lossy().into_owned());
        }
    }
}

/// A labelled split: paths relative to the data root, one class index per file.
#[derive(Clone, Debug)]
pub struct LabelledFiles {
    pub fnames: Vec<String>,
    pub labels: Vec<i64>,
    pub classes: Vec<String>,
    pub skipped: ScanReport,
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// Sorted names of the entries of `dir` (as UTF-8), or an error naming `dir`. A name that is
/// not UTF-8 is an error only where it would be used: hidden entries (macOS's `._café.jpg`)
/// and names without an image extension are passed on lossily, to be skipped.
fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let name = match entry.file_name().into_string() {
            Ok(name) => name,
            Err(raw) => {
                let lossy = raw.to_string_lossy().into_owned();
                if !is_hidden(&lossy) && (has_image_extension(&path) || path.is_dir()) {
                    return Err(Error::layout(path, "file name is not valid UTF-8"));
                }
                lossy
            }
        };
        out.push((name, path));
    }
    // String order on UTF-8 is code-point order, i.e. Python's sorted().
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn require_dir(dir: &Path, what: &str) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::layout(dir, format!("{what} is not a folder"))),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Image files directly inside `dir`, sorted, as (name, path); counts what it skips.
/// Only regular files (or links to them) are images: a folder, a named pipe (reading one
/// blocks until a writer comes, and Ctrl-C cannot interrupt that), a socket or a device is
/// skipped. An entry whose type cannot be read (a dangling link) is kept, so that reading it
/// fails with an error naming it.
fn image_files(
    dir: &Path,
    root: &Path,
    skipped: &mut ScanReport,
) -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for (name, p) in sorted_entries(dir)? {
        if is_hidden(&name) {
            skipped.hidden += 1;
            continue;
        }
        let regular = std::fs::metadata(&p).map(|m| m.is_file()).unwrap_or(true);
        if regular && has_image_extension(&p) {
            files.push((name, p));
        } else {
            skipped.non_image(&p, root);
        }
    }
    Ok(files)
}

/// Scans `root/split/<class>/<file>`. With `classes = None` the split defines the classes (the
/// training split); otherwise the split must have exactly those class folders.
pub fn scan_labelled(
    root: &Path,
    split: &str,
    classes: Option<&[String]>,
) -> Result<LabelledFiles> {
    let dir = root.join(split);
    require_dir(&dir, "split folder")?;
    let mut skipped = ScanReport::default();
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for (name, p) in sorted_entries(&dir)? {
        if is_hidden(&name) {
            skipped.hidden += 1;
        } else if p.is_dir() {
            found.push((name, p));
        } else {
            // A stray file (README, labels.csv) next to the class folders is not a class.
            skipped.non_image(&p, root);
        }
    }
    if found.is_empty() {
        return Err(Error::layout(&dir, "folder has no class sub-folders"));
    }
    let found_names: Vec<String> = found.iter().map(|(n, _)| n.clone()).collect();
    let classes: Vec<String> = match classes {
        None => found_names.clone(),
        Some(train) => {
            let have: BTreeSet<&String> = found_names.iter().collect();
            let want: BTreeSet<&String> = train.iter().collect();
            let missing: Vec<&&String> = want.difference(&have).collect();
            let extra: Vec<&&String> = have.difference(&want).collect();
            if !missing.is_empty() || !extra.is_empty() {
                let mut why = String::from("class folders do not match the training classes");
                if !missing.is_empty() {
                    why += &format!("; missing: {missing:?}");
                }
                if !extra.is_empty() {
                    why += &format!("; not in training: {extra:?}");
                }
                return Err(Error::layout(&dir, why));
            }
            train.to_vec()
        }
    };
    let index: BTreeMap<&str, i64> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as i64))
        .collect();
    // Iterate in class-index order, so the split is grouped by label like the original.
    let mut by_name: BTreeMap<&str, &PathBuf> = BTreeMap::new();
    for (n, p) in &found {
        by_name.insert(n.as_str(), p);
    }
    let mut fnames = Vec::new();
    let mut labels = Vec::new();
    for class in &classes {
        let cdir = by_name[class.as_str()];
        let before = skipped.non_image;
        let files = image_files(cdir, root, &mut skipped)?;
        if files.is_empty() {
            let mut why = String::from("class folder has no image files");
            if skipped.non_image > before {
                let shown: Vec<&String> = skipped.examples.iter().rev().take(3).collect();
                let n = skipped.non_image - before;
                let what = if n == 1 {
                    "entry is not an image"
                } else {
                    "entries are not images"
                };
                why += &format!(
                    " ({n} {what} by extension or type, e.g. {shown:?}; \
                     image extensions: {})",
                    crate::image::decode::IMAGE_EXTENSIONS.join(", ")
                );
            }
            return Err(Error::layout(cdir, why));
        }
        for (name, _) in files {
            fnames.push(format!("{split}/{class}/{name}"));
            labels.push(index[class.as_str()]);
        }
    }
    Ok(LabelledFiles {
        fnames,
        labels,
        classes,
        skipped,
    })
}

/// Scans a flat, unlabelled test folder (sorted; every image extension, not only `*.*`).
pub fn scan_flat(root: &Path, name: &str) -> Result<(Vec<String>, ScanReport)> {
    let dir = root.join(name);
    let not_found = || {
        Error::io(
            &dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "test folder doesn't exist or is empty",
            ),
        )
    };
    if !dir.is_dir() {
        return Err(not_found());
    }
    let mut skipped = ScanReport::default();
    let files = image_files(&dir, root, &mut skipped)?;
    if files.is_empty() {
        return Err(not_found());
    }
    Ok((
        files
            .into_iter()
            .map(|(n, _)| format!("{name}/{n}"))
            .collect(),
        skipped,
    ))
}

/// One labelled row of a CSV: the file id and its raw label field.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvRow {
    pub id: String,
    pub labels: String,
}

/// Splits one CSV line into fields (RFC 4180 quotes: `"a,b"` and `""` inside quotes).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match (ch, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

/// Reads a fastai label CSV: first column the file id, second the labels (space-separated).
/// Rows come back in the file's order, as fastai 0.7 kept them, so that `val_idxs` index the
/// CSV's data rows. Duplicate ids are an error naming both lines.
pub fn read_label_csv(csv: &Path, skip_header: bool) -> Result<Vec<CsvRow>> {
    let text = std::fs::read_to_string(csv).map_err(|e| Error::io(csv, e))?;
    let mut rows: Vec<CsvRow> = Vec::new();
    // Line of each id seen so far, to name both lines of a duplicate.
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (lineno, line) in text.lines().enumerate() {
        if lineno == 0 && skip_header {
            continue;
        }
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let f = csv_fields(line);
        if f.len() < 2 {
            return Err(Error::layout(
                csv,
                format!(
                    "line {}: expected `id,labels`, found {} column(s)",
                    lineno + 1,
                    f.len()
                ),
            ));
        }
        let id = f[0].trim().to_string();
        if id.is_empty() {
            return Err(Error::layout(
                csv,
                format!("line {}: empty file id", lineno + 1),
            ));
        }
        let labels = f[1].trim().to_string();
        if let Some(first) = first_line.get(&id) {
            return Err(Error::layout(
                csv,
                format!(
                    "duplicate labels for id {id:?} on lines {} and {}",
                    first + 1,
                    lineno + 1
                ),
            ));
        }
        first_line.insert(id.clone(), lineno);
        rows.push(CsvRow { id, labels });
    }
    if rows.is_empty() {
        return Err(Error::layout(csv, "CSV has no data rows"));
    }
    Ok(rows)
}

/// Checks that every `root/fname` is an existing file; the error lists the first few missing.
pub fn check_files_exist(root: &Path, fnames: &[String], source: &Path) -> Result<()> {
    let missing: Vec<&String> = fnames.iter().filter(|f| !root.join(f).is_file()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = missing
        .iter()
        .take(5)
        .map(|f| root.join(f).display().to_string())
        .collect();
    Err(Error::layout(
        source,
        format!(
            "{} listed file(s) do not exist, e.g. {}",
            missing.len(),
            shown.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_commas() {
        assert_eq!(csv_fields("a,b c"), vec!["a", "b c"]);
        assert_eq!(
            csv_fields("\"x,y\",\"say \"\"hi\"\"\""),
            vec!["x,y", "say \"hi\""]
        );
        assert_eq!(csv_fields("a,"), vec!["a", ""]);
    }
}
