//! The audit log's hash chain finds edited, removed, reordered and torn records, across
//! rotations, and appending after a power cut keeps the chain verifiable.

use std::fs;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use patchd::audit::{Actor, AuditLimits, AuditLog, Entry, Filter, ProblemKind, TORN_RECORD_EVENT};

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_760_000_000 + s).unwrap()
}

fn write_n(path: &Path, n: u64) -> AuditLog {
    let mut log = AuditLog::open(path, AuditLimits::default()).unwrap();
    for i in 0..n {
        log.append(
            Entry::new("step", Actor::Policy, format!("record {i}"))
                .release(format!("1.{i}.0"))
                .slot("a")
                .field("i", i),
            t(i as i64),
        )
        .unwrap();
    }
    log
}

fn setup(n: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("state/audit.log");
    write_n(&p, n);
    (dir, p)
}

fn lines(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn put_lines(p: &Path, l: &[String]) {
    fs::write(p, l.join("\n") + "\n").unwrap();
}

fn verify(p: &Path) -> patchd::audit::VerifyReport {
    AuditLog::open(p, AuditLimits::default())
        .unwrap()
        .verify()
        .unwrap()
}

#[test]
fn untouched_log_verifies() {
    let (_d, p) = setup(5);
    let r = verify(&p);
    assert!(r.is_intact(), "{r}");
    assert_eq!(r.records, 5);
    assert!(r.warnings.is_empty());
}

#[test]
fn edited_line_is_found() {
    let (_d, p) = setup(5);
    let mut l = lines(&p);
    l[2] = l[2].replace("record 2", "record X");
    put_lines(&p, &l);
    let r = verify(&p);
    assert!(!r.is_intact());
    assert_eq!(r.problems.len(), 1, "{r}");
    assert_eq!(r.problems[0].line, 4);
    assert_eq!(
        r.problems[0].kind,
        ProblemKind::BrokenChain {
            previous_line: Some(3)
        }
    );
    assert!(r.to_string().contains("line 3 was edited"), "{r}");
}

#[test]
fn edited_last_line_is_found_through_the_head() {
    let (_d, p) = setup(4);
    let mut l = lines(&p);
    l[3] = l[3].replace("record 3", "record Y");
    put_lines(&p, &l);
    let r = verify(&p);
    assert!(
        matches!(
            r.problems[0].kind,
            ProblemKind::HeadMismatch { head_seq: 3, .. }
        ),
        "{r}"
    );
}

#[test]
fn line_edited_into_garbage_is_found() {
    let (_d, p) = setup(4);
    let mut l = lines(&p);
    l[1] = "{not json".to_string();
    put_lines(&p, &l);
    let r = verify(&p);
    assert!(!r.is_intact());
    assert!(r
        .problems
        .iter()
        .any(|x| x.line == 2 && matches!(x.kind, ProblemKind::Unparsable(_))));
}

#[test]
fn removed_line_is_found() {
    let (_d, p) = setup(5);
    let mut l = lines(&p);
    l.remove(1);
    put_lines(&p, &l);
    let r = verify(&p);
    assert!(!r.is_intact());
    assert!(r.problems.iter().all(|x| x.line == 2), "{r}");
    assert!(r.problems.iter().any(|x| x.kind
        == ProblemKind::SeqGap {
            expected: 1,
            found: 2
        }));
}

#[test]
fn removed_first_lines_are_found() {
    // Without rotation, a log that no longer starts at seq 0 lost its first records;
    // it must not pass as "older rotated files were deleted".
    let (_d, p) = setup(5);
    let mut l = lines(&p);
    l.drain(..2);
    put_lines(&p, &l);
    let r = verify(&p);
    assert!(
        r.problems
            .iter()
            .any(|x| x.kind == ProblemKind::MissingStart { first_seq: 2 }),
        "{r}"
    );
}

#[test]
fn removed_last_line_is_found() {
    let (_d, p) = setup(5);
    let mut l = lines(&p);
    l.pop();
    put_lines(&p, &l);
    let r = verify(&p);
    assert!(
        matches!(
            r.problems[0].kind,
            ProblemKind::HeadMismatch {
                head_seq: 4,
                last_seq: Some(3)
            }
        ),
        "{r}"
    );
}

#[test]
fn reordered_lines_are_found() {
    let (_d, p) = setup(5);
    let mut l = lines(&p);
    l.swap(1, 2);
    put_lines(&p, &l);
    let r = verify(&p);
    assert!(!r.is_intact());
    assert_eq!(r.problems[0].line, 2, "{r}");
}

#[test]
fn torn_last_line_is_reported_and_append_after_it_keeps_the_chain() {
    let (_d, p) = setup(3);
    // Power cut in the middle of the fourth append.
    // The head file is written after the line, so it still names the third record.
    let head = p.with_file_name("audit.log.head");
    let head_before = fs::read(&head).unwrap();
    let mut log = AuditLog::open(&p, AuditLimits::default()).unwrap();
    log.append(
        Entry::new("fourth", Actor::Uid(1000), "will be torn"),
        t(10),
    )
    .unwrap();
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() - 20]).unwrap();
    fs::write(&head, head_before).unwrap();
    let r = verify(&p);
    assert!(r.is_intact(), "{r}");
    assert_eq!(r.warnings.len(), 1, "{r}");
    assert_eq!(r.warnings[0].line, 4);
    assert_eq!(r.warnings[0].kind, ProblemKind::TornTail);

    let mut log = AuditLog::open(&p, AuditLimits::default()).unwrap();
    assert!(log.has_torn_tail());
    let rec = log
        .append(Entry::new("after-power-cut", Actor::Policy, "next"), t(20))
        .unwrap();
    let r = log.verify().unwrap();
    assert!(r.warnings.is_empty(), "{r}");
    assert!(r.notes.iter().any(|n| n.contains("line 4")), "{r}");
    let all = log.query(&Filter::default()).unwrap();
    let torn_note = all.iter().find(|x| x.event == TORN_RECORD_EVENT).unwrap();
    assert_eq!(torn_note.extra["torn_line"], 4);
    assert_eq!(all.last().unwrap(), &rec);
    // The head still names seq 3 (the torn append never reached it) or the new record.
    let r2 = verify(&p);
    assert!(r2.is_intact(), "{r2}");
}

#[test]
fn torn_line_without_documentation_in_the_middle_is_a_problem() {
    let (_d, p) = setup(3);
    let mut l = lines(&p);
    l.insert(2, "{\"seq\":9,\"ti".to_string());
    put_lines(&p, &l);
    let r = verify(&p);
    assert!(r
        .problems
        .iter()
        .any(|x| x.line == 3 && matches!(x.kind, ProblemKind::Unparsable(_))));
}

#[test]
fn rotation_keeps_chain_verifiable_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let limits = AuditLimits {
        max_bytes: 4096,
        keep: 3,
    };
    let mut log = AuditLog::open(&p, limits).unwrap();
    for i in 0..200 {
        log.append(
            Entry::new("step", Actor::Policy, "x".repeat(100)).field("i", i),
            t(i),
        )
        .unwrap();
    }
    let files = log.files();
    assert_eq!(files.len(), 4, "{files:?}");
    for f in &files {
        assert!(fs::metadata(f).unwrap().len() <= 4096);
    }
    let r = log.verify().unwrap();
    assert!(r.is_intact(), "{r}");
    assert!(r.notes.iter().any(|n| n.contains("anchored")), "{r}");
    assert_eq!(log.next_seq(), 200);

    // An edit to the first line of the live file breaks the link to the rotated file.
    let mut l = lines(&p);
    l[0] = l[0].replace("\"step\"", "\"stEp\"");
    put_lines(&p, &l);
    let r = verify_with(&p, limits);
    assert!(r.problems.iter().any(|x| x.file == p && x.line == 2), "{r}");
    put_lines(
        &p,
        &lines(&p)
            .iter()
            .map(|x| x.replace("stEp", "step"))
            .collect::<Vec<_>>(),
    );
    assert!(verify_with(&p, limits).is_intact());
    // Edit inside a rotated file is found too.
    let rotated = files[1].clone();
    let mut l = lines(&rotated);
    l[2] = l[2].replace("\"step\"", "\"stop\"");
    put_lines(&rotated, &l);
    let r = verify_with(&p, limits);
    assert!(
        r.problems.iter().any(|x| x.file == rotated && x.line == 4),
        "{r}"
    );
}

fn verify_with(p: &Path, limits: AuditLimits) -> patchd::audit::VerifyReport {
    AuditLog::open(p, limits).unwrap().verify().unwrap()
}

#[test]
fn reopen_continues_the_chain() {
    let (_d, p) = setup(3);
    let mut log = AuditLog::open(&p, AuditLimits::default()).unwrap();
    assert_eq!(log.next_seq(), 3);
    log.append(Entry::new("again", Actor::Daemon, "restart"), t(99))
        .unwrap();
    assert!(log.verify().unwrap().is_intact());
}

#[test]
fn query_filters_history() {
    let (_d, p) = setup(6);
    let log = AuditLog::open(&p, AuditLimits::default()).unwrap();
    let r = log
        .query(&Filter {
            release: Some("1.2.0".into()),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].reason, "record 2");
    let r = log
        .query(&Filter {
            since: Some(t(2)),
            until: Some(t(5)),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(r.len(), 3);
    let r = log
        .query(&Filter {
            limit: Some(2),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(r.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert!(log
        .query(&Filter {
            actor: Some(Actor::Uid(0)),
            ..Filter::default()
        })
        .unwrap()
        .is_empty());
}

#[test]
fn bad_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = AuditLog::open(
        dir.path().join("a"),
        AuditLimits {
            max_bytes: 10,
            keep: 1,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("max_bytes"), "{e}");
}

mod tamper_property {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Tamper {
        Edit(usize),
        Remove(usize),
        Swap(usize, usize),
        Duplicate(usize),
    }

    fn tamper() -> impl Strategy<Value = (u64, Tamper)> {
        (3u64..9).prop_flat_map(|n| {
            let i = 0..n as usize;
            let j = 0..n as usize;
            (
                Just(n),
                prop_oneof![
                    i.clone().prop_map(Tamper::Edit),
                    i.clone().prop_map(Tamper::Remove),
                    (i.clone(), j)
                        .prop_filter("distinct", |(a, b)| a != b)
                        .prop_map(|(a, b)| Tamper::Swap(a, b)),
                    i.prop_map(Tamper::Duplicate),
                ],
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        /// Any single edit, removal, swap or duplication of records is found.
        #[test]
        fn any_single_tamper_is_found((n, t) in tamper()) {
            let (_d, p) = setup(n);
            let mut l = lines(&p);
            match t.clone() {
                Tamper::Edit(i) => l[i] = l[i].replace("record", "rec0rd"),
                Tamper::Remove(i) => {
                    l.remove(i);
                }
                Tamper::Swap(a, b) => l.swap(a, b),
                Tamper::Duplicate(i) => {
                    let x = l[i].clone();
                    l.insert(i, x);
                }
            }
            put_lines(&p, &l);
            let r = verify(&p);
            prop_assert!(!r.is_intact(), "{:?} not found: {}", t, r);
        }
    }
}
