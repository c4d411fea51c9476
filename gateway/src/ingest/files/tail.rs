//! Following files: finding them by path or glob, knowing one across renames and truncation,
//! and reading whole lines from where the spool says the last commit ended.
//!
//! A file is known by its device, inode and a fingerprint of its first line (as Vector does):
//! a rename keeps all three, so a rotated file is followed under its new name (or through the
//! open handle once its name no longer matches); copytruncate keeps the inode but shortens the
//! file below the read offset, which starts it again from 0; a new file at the same path is
//! another inode. A file whose first line is not complete yet is not read until it is.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Who a file is, whatever its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    /// FNV-1a of the first line.
    pub fingerprint: u64,
}

impl FileId {
    /// The key its offset is saved under, for source `name`.
    pub fn key(&self, name: &str) -> String {
        format!(
            "file:{name}:{}:{}:{:016x}",
            self.dev, self.ino, self.fingerprint
        )
    }
}

/// The paths `pattern` names: itself, or with `*` and `?` in its last component, every file of
/// that directory whose name matches, sorted.
pub fn discover(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !name.contains(['*', '?']) {
        return vec![pattern.to_owned()];
    }
    let dir = pattern
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        // Not directories; links and special files are listed, and [`open`] says why it
        // refuses them (nothing a glob matches is skipped without a word).
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| crate::route::glob_matches(name, n))
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// An open file, who it is, and its first line.
pub type Opened = (File, FileId, Vec<u8>);

/// An open file and who it is; `Ok(None)` while its first line is incomplete (or it cannot be
/// opened: it is looked for again at the next poll); `Err` with the counter label when the path
/// is a symbolic link (unless `follow_symlinks`) or not a regular file. The link is refused at
/// the open itself (`O_NOFOLLOW`), so it cannot be swapped in after a check; a FIFO or device is
/// opened without blocking (`O_NONBLOCK`) and let go.
pub fn open(
    path: &Path,
    max_line: usize,
    follow_symlinks: bool,
) -> Result<Option<Opened>, &'static str> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut flags = libc::O_NONBLOCK;
    if !follow_symlinks {
        flags |= libc::O_NOFOLLOW;
    }
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err("symlink"),
        Err(_) => return Ok(None),
    };
    let Ok(meta) = file.metadata() else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Err("not_a_regular_file");
    }
    let Some(first) = first_line(&mut file, max_line) else {
        return Ok(None);
    };
    let fingerprint = crate::hash::fnv1a(&first);
    let id = FileId {
        dev: meta.dev(),
        ino: meta.ino(),
        fingerprint,
    };
    Ok(Some((file, id, first)))
}

/// The first line without its newline (at most `max_line` bytes of it), if it is complete.
/// Read a kilobyte at a time: every poll asks this of every file it finds, and a first line is
/// usually short.
fn first_line(file: &mut File, max_line: usize) -> Option<Vec<u8>> {
    file.seek(SeekFrom::Start(0)).ok()?;
    let mut head = Vec::new();
    let mut piece = [0u8; 1024];
    loop {
        let n = file.read(&mut piece).ok()?;
        let searched = head.len();
        head.extend_from_slice(&piece[..n]);
        // A first line longer than the limit: its first max_line bytes are the fingerprint.
        if let Some(end) = head[searched..].iter().position(|b| *b == b'\n') {
            head.truncate((searched + end).min(max_line));
            return Some(head);
        }
        if head.len() > max_line {
            head.truncate(max_line);
            return Some(head);
        }
        if n == 0 {
            return None;
        }
    }
}

/// What one read found after `offset`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    /// Complete lines, each with the offset it starts at, without `\n` (or `\r\n`).
    pub lines: Vec<(u64, Vec<u8>)>,
    /// Lines over the limit: where each starts, its first bytes, and its length.
    pub too_long: Vec<(u64, Vec<u8>, u64)>,
    /// The offset after the last complete line: where the next read starts.
    pub next: u64,
}

/// Reads whole lines from `offset`, up to `max_lines` lines or about `max_bytes` bytes. A
/// partial last line is left for a later read; a line over `max_line` bytes is reported in
/// `too_long` and skipped through its newline.
pub fn read_lines(
    file: &mut File,
    offset: u64,
    max_line: usize,
    max_lines: usize,
    max_bytes: usize,
) -> std::io::Result<Chunk> {
    // Only what is there: an idle file costs a metadata call, not a buffer.
    let available = len(file).saturating_sub(offset);
    if available == 0 {
        return Ok(Chunk {
            next: offset,
            ..Chunk::default()
        });
    }
    file.seek(SeekFrom::Start(offset))?;
    let size = (max_bytes.max(max_line + 1) as u64).min(available) as usize;
    let mut buf = vec![0u8; size];
    let mut filled = 0;
    loop {
        let n = file.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
        if filled == buf.len() {
            break;
        }
    }
    let data = &buf[..filled];
    let mut chunk = Chunk {
        next: offset,
        ..Chunk::default()
    };
    let mut start = 0;
    while chunk.lines.len() < max_lines {
        let Some(end) = data[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|p| p + start)
        else {
            // No newline in what is left: a partial line, or one longer than the limit.
            if data.len() - start > max_line {
                let skipped = skip_line(file, offset + start as u64)?;
                if let Some(after) = skipped {
                    let kept = data[start..start + 1024.min(max_line)].to_vec();
                    chunk.too_long.push((
                        offset + start as u64,
                        kept,
                        after - (offset + start as u64),
                    ));
                    chunk.next = after;
                }
            }
            break;
        };
        let line = &data[start..end];
        let at = offset + start as u64;
        if line.len() > max_line {
            chunk.too_long.push((
                at,
                line[..1024.min(max_line)].to_vec(),
                line.len() as u64 + 1,
            ));
        } else {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            chunk.lines.push((at, line.to_vec()));
        }
        start = end + 1;
        chunk.next = offset + start as u64;
    }
    Ok(chunk)
}

/// The offset after the newline that ends the line starting at `from`, if it has one yet.
fn skip_line(file: &mut File, from: u64) -> std::io::Result<Option<u64>> {
    file.seek(SeekFrom::Start(from))?;
    let mut buf = [0u8; 64 * 1024];
    let mut at = from;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(p) = buf[..n].iter().position(|b| *b == b'\n') {
            return Ok(Some(at + p as u64 + 1));
        }
        at += n as u64;
    }
}

/// The file's length now.
pub fn len(file: &File) -> u64 {
    file.metadata().map_or(0, |m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn whole_lines_only_and_a_partial_last_line_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, b"one\r\ntwo\nthr").unwrap();
        let (mut file, _, first) = open(&path, 100, false).unwrap().unwrap();
        assert_eq!(first, b"one\r");
        let c = read_lines(&mut file, 0, 100, 10, 4096).unwrap();
        assert_eq!(c.lines, [(0, b"one".to_vec()), (5, b"two".to_vec())]);
        assert_eq!(c.next, 9);
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        w.write_all(b"ee\n").unwrap();
        let c = read_lines(&mut file, 9, 100, 10, 4096).unwrap();
        assert_eq!(c.lines, [(9, b"three".to_vec())]);
    }

    #[test]
    fn a_line_over_the_limit_is_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let long = "x".repeat(50);
        std::fs::write(&path, format!("ok\n{long}\nafter\n")).unwrap();
        let (mut file, _, _) = open(&path, 10, false).unwrap().unwrap();
        let c = read_lines(&mut file, 0, 10, 10, 4096).unwrap();
        assert_eq!(c.lines, [(0, b"ok".to_vec()), (54, b"after".to_vec())]);
        assert_eq!(c.too_long.len(), 1);
        assert_eq!((c.too_long[0].0, c.too_long[0].2), (3, 51));
        // Read in small pieces, the long line is skipped through its newline all the same.
        let c = read_lines(&mut file, 3, 10, 10, 16).unwrap();
        assert_eq!(c.too_long.len(), 1);
        assert_eq!(c.next, 54);
    }

    #[test]
    fn globs_match_names_in_the_last_component() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.log", "a.log", "a.log.1", "c.txt"] {
            std::fs::write(dir.path().join(n), b"x\n").unwrap();
        }
        let found = discover(&dir.path().join("*.log"));
        let names: Vec<_> = found
            .iter()
            .filter_map(|p| p.file_name()?.to_str())
            .collect();
        assert_eq!(names, ["a.log", "b.log"]);
        assert_eq!(discover(&dir.path().join("c.txt")).len(), 1);
    }

    #[test]
    fn a_file_is_known_by_inode_and_first_line_not_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("app.log"), dir.path().join("app.log.1"));
        std::fs::write(&a, b"first\nsecond\n").unwrap();
        let (_, before, _) = open(&a, 100, false).unwrap().unwrap();
        std::fs::rename(&a, &b).unwrap();
        let (_, after, _) = open(&b, 100, false).unwrap().unwrap();
        assert_eq!(before, after, "renamed, the same file");
        std::fs::write(&a, b"first\n").unwrap();
        let (_, fresh, _) = open(&a, 100, false).unwrap().unwrap();
        assert_ne!(fresh, before, "a new file at the old name is another file");
        std::fs::write(dir.path().join("empty.log"), b"no newline yet").unwrap();
        assert!(open(&dir.path().join("empty.log"), 100, false)
            .unwrap()
            .is_none());
    }
}
