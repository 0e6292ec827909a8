//! Replay on a CalDAV server nobody here wrote: Radicale, installed from
//! PyPI by tests/run.sh (`TAPEDECK_RADICALE` names its Python). Two users
//! authenticate with HTTP Basic (recorded redacted), each creates a
//! calendar under a client-made UUID (MKCALENDAR), puts events under
//! client-made UUIDs whose iCalendar body carries the same UID, edits one
//! with `If-Match` (Radicale answers 412 on a stale ETag), finds it by UID
//! with a calendar-query (the id inside an XML filter) and deletes another
//! with `If-Match`. Replayed at 1x and 5x on the same server, Radicale's
//! own storage must hold exactly 1x and 5x the recorded calendars, events
//! and edits under each user, every event in a calendar of its user's
//! world, with the UID its path names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::Method;

use crate::support::thirdparty::{
    basic, etag, free_port, replay_1x_5x_and_verbatim, uuid, wait_until_answers,
};
use crate::support::{TestProxy, client, send};

const USERS: [(&str, &str); 2] = [("alice", "alice-Pw-1"), ("bob", "bob-Pw-2")];
/// Events each user puts; the first is edited, the last deleted.
const EVENTS: usize = 3;

/// A Radicale server on a free loopback port, storing into a temporary
/// folder; stopped when dropped.
struct Radicale {
    url: String,
    root: PathBuf,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Radicale {
    async fn start() -> Radicale {
        let python = std::env::var("TAPEDECK_RADICALE").expect(
            "TAPEDECK_RADICALE names the Python that runs Radicale: run the tests with `bash tests/run.sh`",
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let users = dir.path().join("users");
        let lines: String = USERS.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
        std::fs::write(&users, lines).expect("write users");
        let storage = dir.path().join("collections");
        let config = dir.path().join("config");
        std::fs::write(
            &config,
            format!(
                "[server]\nhosts = 127.0.0.1:{port}\n\
                 [auth]\ntype = htpasswd\nhtpasswd_filename = {}\nhtpasswd_encryption = plain\n\
                 [storage]\nfilesystem_folder = {}\n\
                 [rights]\ntype = owner_only\n\
                 [logging]\nlevel = warning\n",
                users.display(),
                storage.display()
            ),
        )
        .expect("write config");
        let log = std::fs::File::create(dir.path().join("radicale.log")).expect("log file");
        let child = tokio::process::Command::new(&python)
            .args(["-m", "radicale", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start radicale");
        let radicale = Radicale {
            url: format!("http://127.0.0.1:{port}"),
            root: storage.join("collection-root"),
            child,
            _dir: dir,
        };
        // Readiness: any answer (a 401 without credentials) means the
        // listener is up.
        wait_until_answers(
            &format!("{}/", radicale.url),
            Duration::from_secs(60),
            |_| true,
        )
        .await;
        radicale
    }

    /// Each user's calendars, each calendar's events: the UIDs their
    /// bodies carry, whether the file name is that UID, and whether the
    /// event holds the edit. Read from Radicale's own storage.
    fn stored(&self) -> Stored {
        let mut s = Stored::default();
        for (user, _) in USERS {
            let mut calendars = Vec::new();
            for calendar in dirs(&self.root.join(user)) {
                let mut events = Vec::new();
                for entry in std::fs::read_dir(&calendar)
                    .expect("read calendar")
                    .flatten()
                {
                    let path = entry.path();
                    if path.extension().is_none_or(|e| e != "ics") {
                        continue;
                    }
                    let text = std::fs::read_to_string(&path).expect("read event");
                    let uid = text
                        .lines()
                        .find_map(|l| l.strip_prefix("UID:"))
                        .expect("UID")
                        .trim()
                        .to_string();
                    let stem = path.file_stem().expect("stem").to_string_lossy();
                    assert_eq!(uid, stem, "event stored under its own UID");
                    events.push(text.contains("SUMMARY:moved"));
                }
                calendars.push(events);
            }
            s.calendars.insert(user, calendars);
        }
        s
    }
}

impl Drop for Radicale {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn dirs(path: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect()
}

#[derive(Debug, Default, PartialEq)]
struct Stored {
    /// Per user, per calendar: each event, `true` when it holds the edit.
    calendars: BTreeMap<&'static str, Vec<Vec<bool>>>,
}

impl Stored {
    /// What `copies` replays of the recording leave per user: that many
    /// calendars, each with the events that were not deleted, the first
    /// one edited.
    fn expected(copies: usize) -> Stored {
        let mut events = vec![false; EVENTS - 1];
        events[0] = true;
        Stored {
            calendars: USERS
                .iter()
                .map(|(u, _)| (*u, vec![events.clone(); copies]))
                .collect(),
        }
    }

    /// [`Stored`] with each calendar's events sorted, calendars sorted.
    fn normalized(mut self) -> Stored {
        for calendars in self.calendars.values_mut() {
            for events in calendars.iter_mut() {
                events.sort_unstable_by(|a, b| b.cmp(a));
            }
            calendars.sort();
        }
        self
    }
}

fn event(uid: &str, summary: &str) -> Bytes {
    Bytes::from(format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tapedeck//test//EN\r\n\
         BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261207T080000Z\r\n\
         DTSTART:20261208T090000Z\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    ))
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("method")
}

/// The recorded traffic: each user's session, one after the other.
async fn record(proxy: &TestProxy) {
    let c = client();
    for (user, password) in USERS {
        // Each user's own client: the session key when no credential is
        // sent yet (`X-Session-Id` would be redacted as a credential).
        let session = format!("{user}-client/1.0");
        let basic = basic(user, password);
        let h = |extra: &[(&'static str, String)]| {
            let mut h = vec![
                ("user-agent", session.clone()),
                ("authorization", basic.clone()),
            ];
            h.extend(extra.iter().cloned());
            h
        };
        let go = async |m: &str, path: &str, headers: Vec<(&'static str, String)>, body: Bytes| {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send(&c, method(m), &proxy.url(path), &headers, body).await
        };
        let xml = ("content-type", "application/xml; charset=utf-8".to_string());
        let ics = ("content-type", "text/calendar; charset=utf-8".to_string());
        let (status, _, _) = go(
            "PROPFIND",
            &format!("/{user}/"),
            h(&[("depth", "1".into()), xml.clone()]),
            Bytes::from_static(
                br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:displayname/></D:prop></D:propfind>"#,
            ),
        )
        .await;
        assert_eq!(status, 207);
        let calendar = format!("/{user}/{}/", uuid());
        let (status, _, _) = go("MKCALENDAR", &calendar, h(&[]), Bytes::new()).await;
        assert_eq!(status, 201);
        let mut events = Vec::new();
        for i in 0..EVENTS {
            let uid = uuid();
            let path = format!("{calendar}{uid}.ics");
            let (status, headers, _) = go(
                "PUT",
                &path,
                h(&[("if-none-match", "*".into()), ics.clone()]),
                event(&uid, &format!("event {i}")),
            )
            .await;
            assert_eq!(status, 201);
            events.push((uid, path, etag(&headers)));
        }
        let (uid, path, tag) = &events[0];
        let (status, _, _) = go(
            "PUT",
            path,
            h(&[("if-match", tag.clone()), ics.clone()]),
            event(uid, "moved"),
        )
        .await;
        assert_eq!(status, 204);
        let query = format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
<D:prop><D:getetag/></D:prop>
<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">
<C:prop-filter name="UID"><C:text-match collation="i;octet">{uid}</C:text-match></C:prop-filter>
</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#
        );
        let (status, _, body) = go(
            "REPORT",
            &calendar,
            h(&[("depth", "1".into()), xml.clone()]),
            Bytes::from(query),
        )
        .await;
        assert_eq!(status, 207);
        assert!(String::from_utf8_lossy(&body).contains(uid.as_str()));
        let (_, path, tag) = &events[EVENTS - 1];
        let (status, _, _) = go(
            "DELETE",
            path,
            h(&[("if-match", tag.clone())]),
            Bytes::new(),
        )
        .await;
        assert_eq!(status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radicale_stores_exactly_n_times_the_recorded_calendars_events_and_edits() {
    let radicale = Radicale::start().await;
    let mut proxy = TestProxy::start(&radicale.url).await;
    record(&proxy).await;
    proxy.stop().await;
    assert_eq!(radicale.stored().normalized(), Stored::expected(1));
    // Recorded redacted: Basic keeps the user name, the password is a
    // marker that `[users]` gives back; sent verbatim it is refused.
    replay_1x_5x_and_verbatim(&proxy.store, &radicale.url, &USERS, async |copies| {
        assert_eq!(
            radicale.stored().normalized(),
            Stored::expected(copies as usize),
            "{copies} copies"
        );
    })
    .await;
}
