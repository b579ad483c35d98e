//! tracefs: where it is mounted and what a classic tracepoint's record
//! looks like on this kernel (from its `format` file).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs mount point, if tracefs is mounted.
pub fn mount_point() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// C declaration without the name, e.g. `pid_t` or `__data_loc char[]`.
    pub c_type: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// The parsed `format` file of one tracepoint.
#[derive(Debug, Clone)]
pub struct Format {
    pub event: String,
    pub fields: Vec<Field>,
}

impl Format {
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Self> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::TracepointMissing {
                    tracepoint: format!("{category}:{name}"),
                }
            } else {
                Error::io(&path, e)
            }
        })?;
        Self::parse(&format!("{category}:{name}"), &text)
    }

    pub fn parse(event: &str, text: &str) -> Result<Self> {
        let fields = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("field:"))
            .map(|l| {
                parse_field(l).ok_or_else(|| Error::BadFormat {
                    tracepoint: event.to_string(),
                    reason: format!("cannot parse field line {l:?}"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if fields.is_empty() {
            return Err(Error::BadFormat {
                tracepoint: event.to_string(),
                reason: "no fields".into(),
            });
        }
        Ok(Self {
            event: event.to_string(),
            fields,
        })
    }

    /// Offset of a field that must be a `size`-byte integer, as the eBPF
    /// program reads it; anything else means the layout is not the one the
    /// program was written for.
    pub fn int_field(&self, name: &str, size: u32) -> Result<u32> {
        let f = self
            .fields
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| Error::BadFormat {
                tracepoint: self.event.clone(),
                reason: format!("no field {name:?}"),
            })?;
        if f.size != size || f.c_type.contains("__data_loc") || f.c_type.contains('[') {
            return Err(Error::BadFormat {
                tracepoint: self.event.clone(),
                reason: format!(
                    "field {name:?} is `{}` of {} bytes, expected a {size}-byte integer",
                    f.c_type, f.size
                ),
            });
        }
        Ok(f.offset)
    }
}

/// Parses `TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;`.
fn parse_field(line: &str) -> Option<Field> {
    let mut parts = line.split(';').map(str::trim);
    let decl = parts.next()?;
    let mut offset = None;
    let mut size = None;
    let mut signed = false;
    for p in parts {
        if let Some(v) = p.strip_prefix("offset:") {
            offset = v.parse().ok();
        } else if let Some(v) = p.strip_prefix("size:") {
            size = v.parse().ok();
        } else if let Some(v) = p.strip_prefix("signed:") {
            signed = v == "1";
        }
    }
    let split = decl.rfind(|c: char| c.is_whitespace() || c == '*')?;
    let (c_type, name) = (decl[..=split].trim(), decl[split + 1..].trim());
    // `char comm[16]`: the array suffix belongs to the type.
    let (name, c_type) = match name.find('[') {
        Some(i) => (&name[..i], format!("{c_type}{}", &name[i..])),
        None => (name, c_type.to_string()),
    };
    Some(Field {
        name: name.to_string(),
        c_type,
        offset: offset?,
        size: size?,
        signed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V6_18: &str = include_str!("../../tests/fixtures/format/sched_migrate_task-6.18");
    const V6_1: &str = include_str!("../../tests/fixtures/format/sched_migrate_task-6.1");

    #[test]
    fn parses_both_layouts_of_sched_migrate_task() {
        let new = Format::parse("sched:sched_migrate_task", V6_18).unwrap();
        let old = Format::parse("sched:sched_migrate_task", V6_1).unwrap();
        assert_eq!(
            [
                new.int_field("pid", 4).unwrap(),
                new.int_field("orig_cpu", 4).unwrap(),
                new.int_field("dest_cpu", 4).unwrap()
            ],
            [12, 20, 24]
        );
        assert_eq!(
            [
                old.int_field("pid", 4).unwrap(),
                old.int_field("orig_cpu", 4).unwrap(),
                old.int_field("dest_cpu", 4).unwrap()
            ],
            [24, 32, 36]
        );
        let comm_new = new.fields.iter().find(|f| f.name == "comm").unwrap();
        assert_eq!(comm_new.c_type, "__data_loc char[]");
        let comm_old = old.fields.iter().find(|f| f.name == "comm").unwrap();
        assert_eq!((comm_old.c_type.as_str(), comm_old.size), ("char[16]", 16));
        assert!(new
            .fields
            .iter()
            .any(|f| f.name == "common_pid" && f.signed));
    }

    #[test]
    fn rejects_fields_of_the_wrong_shape() {
        let f = Format::parse("sched:sched_migrate_task", V6_18).unwrap();
        assert!(matches!(
            f.int_field("comm", 4),
            Err(Error::BadFormat { .. })
        ));
        assert!(matches!(
            f.int_field("pid", 8),
            Err(Error::BadFormat { .. })
        ));
        assert!(matches!(
            f.int_field("missing", 4),
            Err(Error::BadFormat { .. })
        ));
    }

    #[test]
    fn rejects_text_without_fields() {
        assert!(Format::parse("x:y", "name: y\nID: 1\n").is_err());
        assert!(Format::parse("x:y", "\tfield:int a;\toffset:zz;\tsize:4;\tsigned:1;\n").is_err());
    }

    #[test]
    fn parses_pointer_fields() {
        let f = parse_field("const char * name;\toffset:8;\tsize:8;\tsigned:0;").unwrap();
        assert_eq!(
            (f.name.as_str(), f.c_type.as_str(), f.size),
            ("name", "const char *", 8)
        );
    }
}
