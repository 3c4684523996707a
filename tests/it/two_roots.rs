//! Two apps on one host: two roots side by side, each with its own ports and daemon.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::*;

fn init(root: &Path) -> Output {
    let out = Command::new(BIN).arg("init").arg(root).output().unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The ports of router.listen, slots.blue.listen, slots.green.listen, control.listen.
fn ports(root: &Path) -> Vec<u16> {
    let text = std::fs::read_to_string(root.join("bluegreen.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let port = |table: &toml::Value| {
        let addr: std::net::SocketAddr = table["listen"].as_str().unwrap().parse().unwrap();
        addr.port()
    };
    vec![
        port(&doc["router"]),
        port(&doc["slots"]["blue"]),
        port(&doc["slots"]["green"]),
        port(&doc["control"]),
    ]
}

fn ports_line(out: &Output) -> Option<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|line| line.starts_with("ports "))
        .map(str::to_string)
}

/// `bluegreen init /srv/web` beside `/srv/api` gave both the same default ports, so the
/// second daemon could not listen. It now takes the first set no root beside it names,
/// and says so; the config it writes is valid.
#[test]
fn init_beside_another_root_gives_it_ports_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let (api, web) = (tmp.path().join("api"), tmp.path().join("web"));
    init(&api);
    // api on the defaults, whatever this host (or another test's init) held when it was
    // made: the clash under test is with api, not with the host.
    let file = api.join("bluegreen.toml");
    let mut doc: toml::Table = std::fs::read_to_string(&file).unwrap().parse().unwrap();
    doc["router"]["listen"] = "0.0.0.0:8080".into();
    doc["slots"]["blue"]["listen"] = "127.0.0.1:9090".into();
    doc["slots"]["green"]["listen"] = "127.0.0.1:5060".into();
    doc["control"]["listen"] = "127.0.0.1:8081".into();
    std::fs::write(&file, toml::to_string(&doc).unwrap()).unwrap();
    let out = init(&web);
    let (api_ports, web_ports) = (ports(&api), ports(&web));
    assert!(
        web_ports.iter().all(|port| !api_ports.contains(port)),
        "api {api_ports:?}, web {web_ports:?}"
    );
    let line = ports_line(&out).expect("a ports line");
    assert!(
        line.starts_with(&format!(
            "ports     router.listen 0.0.0.0:{}, slots.blue.listen 127.0.0.1:{}, slots.green.listen 127.0.0.1:{}, control.listen 127.0.0.1:{} (the default ports are taken: ",
            web_ports[0], web_ports[1], web_ports[2], web_ports[3]
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!("{} names them", api.display())),
        "{line}"
    );
    assert_checks(&web);

    // Run again, init keeps the config it wrote and says nothing of ports.
    let again = init(&web);
    assert_eq!(ports_line(&again), None);
    assert_eq!(ports(&web), web_ports);
}

/// A default port something on the host listens on is not written into a new config.
#[test]
fn init_passes_over_a_default_port_in_use() {
    // Another test's init may be trying the port this instant: wait for it. If something
    // else holds it for good, it is in use all the same.
    let _held = poll_until(Duration::from_secs(2), || {
        TcpListener::bind("127.0.0.1:9090").ok()
    });
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let out = init(&root);
    assert_ne!(ports(&root)[1], 9090);
    let line = ports_line(&out).expect("a ports line");
    assert!(line.contains("9090"), "{line}");
    assert!(line.contains("in use on this host)"), "{line}");
}

/// A root given another root's ports: its `serve` says, on one line, which address and
/// key, which file to change, and which root's daemon answers there; or, when no
/// bluegreen daemon answers, how to find out what listens.
#[test]
fn serve_on_another_roots_ports_names_that_root_and_the_keys() {
    let mut api = Root::new();
    api.serve();
    let web = Root::new();
    web.set("router.listen", format!("127.0.0.1:{}", api.front));
    web.set("control.listen", format!("127.0.0.1:{}", api.control));
    assert_eq!(
        web.run_err(&["serve"]),
        format!(
            "error: cannot listen on 127.0.0.1:{front} (router.listen): Address already in use (os error 98): the daemon of {api} answers on this config's control.listen 127.0.0.1:{control} and most likely holds 127.0.0.1:{front} too: give this root addresses of its own (router.listen, slots.blue.listen, slots.green.listen, control.listen in {web}/bluegreen.toml)",
            front = api.front,
            control = api.control,
            api = api.path.display(),
            web = web.path.display(),
        )
    );
    // Only its control.listen: the other daemon answers right there.
    let solo = Root::new();
    solo.set("control.listen", format!("127.0.0.1:{}", api.control));
    assert_eq!(
        solo.run_err(&["serve"]),
        format!(
            "error: cannot listen on 127.0.0.1:{control} (control.listen): Address already in use (os error 98): the daemon of {api} answers there: give this root addresses of its own (router.listen, slots.blue.listen, slots.green.listen, control.listen in {solo}/bluegreen.toml)",
            control = api.control,
            api = api.path.display(),
            solo = solo.path.display(),
        )
    );

    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = other.local_addr().unwrap().port();
    web.set("slots.green.listen", format!("127.0.0.1:{port}"));
    web.set("router.listen", format!("127.0.0.1:{}", web.front));
    web.set("control.listen", format!("127.0.0.1:{}", web.control));
    assert_eq!(
        web.run_err(&["serve"]),
        format!(
            "error: cannot listen on 127.0.0.1:{port} (slots.green.listen): Address already in use (os error 98): another process listens there (`ss -ltnp 'sport = :{port}'` says which): give this root its own slots.green.listen in {}/bluegreen.toml",
            web.path.display()
        )
    );
    // Nothing listens, but a connection has the port as its own (the kernel hands out
    // ports of its range for outgoing connections): the hint named a listener.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
    let port = client.local_addr().unwrap().port();
    web.set("slots.green.listen", format!("127.0.0.1:{port}"));
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let (low, high) = range.trim().split_once(char::is_whitespace).unwrap();
    let high = high.trim();
    assert_eq!(
        web.run_err(&["serve"]),
        format!(
            "error: cannot listen on 127.0.0.1:{port} (slots.green.listen): Address already in use (os error 98): no process listens there, but a connection uses it as its own port (`ss -tanp 'sport = :{port}'` says which), as the kernel hands out ports {low}-{high} (net.ipv4.ip_local_port_range) to outgoing connections: give this root a slots.green.listen below {low} in {}/bluegreen.toml",
            web.path.display()
        )
    );
    drop(client);
    // The first daemon serves on.
    assert_eq!(api.get(api.blue, "/").status, 503);
}

/// A port below 1024 that this user may not bind (the README's own advice for port 80 is
/// the socket unit) says so and what to do: `check` takes it, and `serve` said only
/// `Permission denied`. As root, the daemon runs without CAP_NET_BIND_SERVICE.
#[test]
fn a_privileged_port_names_the_socket_unit() {
    let start = sysctl("net/ipv4/ip_unprivileged_port_start") as u16;
    if start < 2 {
        eprintln!("skipped: this host lets any user bind any port");
        return;
    }
    let root = Root::new();
    let port = start - 1;
    root.set("router.listen", format!("127.0.0.1:{port}"));
    let mut serve = if nix::unistd::geteuid().is_root() {
        let mut setpriv = Command::new("setpriv");
        setpriv.args(["--bounding-set", "-net_bind_service", BIN]);
        setpriv
    } else {
        Command::new(BIN)
    };
    let out = serve
        .args(["serve", "--root"])
        .arg(&root.path)
        .env_remove("BLUEGREEN_ROOT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "error: cannot listen on 127.0.0.1:{port} (router.listen): Permission denied (os error 13): ports below {start} take a privilege this process lacks: have systemd's socket unit bind it (systemd/bluegreen.socket, README \"Install as a service\"), or give this root a router.listen of {start} or above in {}/bluegreen.toml",
            root.path.display()
        )
    );
}

/// A root beside the new one whose config this user may not read (another app's user
/// made it, mode 0640): its ports cannot be passed over, and `init` says so instead of
/// handing out the same ones in silence. As root, the second init runs as `nobody`.
#[test]
fn init_beside_a_root_it_may_not_read_says_so() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: running init as another user needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (api, web) = (tmp.path().join("api"), tmp.path().join("web"));
    init(&api);
    std::fs::create_dir(&web).unwrap();
    let nobody = Some(nix::unistd::Uid::from_raw(65534));
    nix::unistd::chown(&web, nobody, Some(nix::unistd::Gid::from_raw(65534))).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "init",
        ])
        .arg(&web)
        .env("HOME", &web)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let note = format!(
        "note      this user may not read the config of {}: ports they name and their daemons do not listen on yet were not passed over; compare by hand",
        api.display()
    );
    assert!(said.lines().any(|line| line == note), "{said}");
}

/// A root copied with `cp -a` to make a second app keeps its data apart: each release's
/// linked dir named the original root's shared folder by absolute path, so both apps
/// read and wrote one folder, and a root moved or restored elsewhere saw none of its own.
#[test]
fn a_root_copied_to_make_a_second_app_keeps_its_data_apart() {
    let root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: release ");
    let copy = root.path.parent().unwrap().join("copy");
    let out = Command::new("cp")
        .arg("-a")
        .arg(&root.path)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(copy.join("blue/current/data/order"), "the copy's").unwrap();
    assert_eq!(
        std::fs::read_to_string(copy.join("blue/shared/data/order")).unwrap(),
        "the copy's"
    );
    assert!(!root.path.join("blue/shared/data/order").exists());
}

/// A release whose linked dir names another root's shared folder by absolute path (made
/// by an older bluegreen in the root this one was copied or moved from) is pointed at
/// this root's before its generation starts, and the daemon says so: the app sees this
/// root's data, not the other's (or, that root gone, none). Also when the config no
/// longer names that linked dir, and the release (an older bluegreen's) does not say
/// what it was made with.
#[test]
fn a_release_linking_the_root_it_was_copied_from_is_pointed_at_this_one() {
    let mut root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: release ");
    let v1 = root.current("blue").unwrap();
    let meta = root.path.join("blue/current/.bluegreen-release.json");
    let mut made: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    made.as_object_mut().unwrap().remove("linked_dirs").unwrap();
    std::fs::write(&meta, made.to_string()).unwrap();
    root.set("app.linked_dirs", toml::Value::Array(vec![]));
    let theirs = root
        .path
        .parent()
        .unwrap()
        .join("original/blue/shared/data");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("theirs"), "1").unwrap();
    let ours = root.path.join("blue/shared/data");
    std::fs::write(ours.join("ours"), "2").unwrap();
    let link = root.path.join("blue/current/data");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&theirs, &link).unwrap();

    root.serve();
    root.wait_body(root.blue, "v1");
    assert_eq!(root.get(root.blue, "/items").body.trim(), r#"{"ours":"2"}"#);
    let said = format!(
        "blue: release {v1}'s linked dir `data` named {}, outside this root (the root was moved or copied from there?): it names this root's {} now",
        theirs.display(),
        ours.display()
    );
    root.wait_log(&said);
    // An event, which `status` shows too, not a log line only.
    let events = root.control("GET", "/events").body;
    assert!(events.contains(&said), "{events}");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("../../shared/data")
    );
}

/// A slot whose `releases` is a link to a folder on another disk: `..` from a release
/// leads there, not back to the slot, so a relative link to `shared/` dangled (the app's
/// writes failed, or, with a `shared` beside the releases, both slots shared one
/// folder). Such a slot's releases link by absolute path, and a relative link made
/// before `releases` moved is pointed so before its generation starts.
#[test]
fn a_slot_whose_releases_are_on_another_disk_links_its_shared_folder() {
    let mut root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: release ");
    let elsewhere = root.path.parent().unwrap().join("bigdisk/blue-releases");
    std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    std::fs::rename(root.path.join("blue/releases"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.path.join("blue/releases")).unwrap();
    let shared = root.path.join("blue/shared/data");
    std::fs::write(shared.join("v1"), "1").unwrap();

    root.serve();
    root.wait_body(root.blue, "v1");
    assert_eq!(root.get(root.blue, "/items").body.trim(), r#"{"v1":"1"}"#);
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    assert_eq!(
        std::fs::read_link(root.path.join("blue/current/data")).unwrap(),
        shared
    );
    let put = http("PUT", &root.url(root.blue, "/items/v2"), Some("2")).unwrap();
    assert!(put.status < 300, "{put:?}");
    assert_eq!(std::fs::read_to_string(shared.join("v2")).unwrap(), "2");
}

/// A push from a worker's process (a deploy bot in one app pushing to another) carries
/// that worker's marks; its build must not, or the worker's daemon takes the build for
/// what the worker left and stops it with the worker's generation.
#[test]
fn a_build_does_not_carry_the_marks_of_the_worker_that_pushed() {
    let root = Root::new();
    let seen = root.path.parent().unwrap().join("build-env");
    root.set(
        "build.command",
        format!("sh -c 'env > \"$0\"' {}", seen.display()),
    );
    root.commit("v1", &[("VERSION", "v1\n")]);
    let out = git_command(&root.work)
        .env("BLUEGREEN_WORKER_OF", "/srv/other-app")
        .env("BLUEGREEN_GENERATION", "blue/7")
        .args(["push", "blue", "+HEAD:refs/heads/main"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = std::fs::read_to_string(&seen).unwrap();
    assert!(env.contains("BLUEGREEN_BUILD="), "{env}");
    assert!(!env.contains("BLUEGREEN_WORKER_OF="), "{env}");
    assert!(!env.contains("BLUEGREEN_GENERATION="), "{env}");
}

/// A slot repo made a link to another root's (to share one remote between two apps):
/// the hook finds its root by the repo's real folder, so a push to this root deployed
/// to the other root's slot, and `init` and `status` said nothing.
#[test]
fn a_slot_repo_linked_to_another_roots_is_refused_by_init_and_noted_by_status() {
    let other = Root::new();
    let mut root = Root::new();
    let repo = root.path.join("blue.git");
    std::fs::remove_dir_all(&repo).unwrap();
    std::os::unix::fs::symlink(other.path.join("blue.git"), &repo).unwrap();
    let config_before = std::fs::read(root.path.join("bluegreen.toml")).unwrap();
    let why = format!(
        "{} links to {}: the hook finds its root by the repo's real folder, so pushes to blue deploy to blue of {}; a root's repos are folders of its own (remove the link, then `bluegreen init {}`)",
        repo.display(),
        other.path.join("blue.git").display(),
        other.path.display(),
        root.path.display()
    );
    let out = Command::new(BIN)
        .arg("init")
        .arg(&root.path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: {why}; nothing was changed")
    );
    assert_eq!(
        std::fs::read(root.path.join("bluegreen.toml")).unwrap(),
        config_before
    );
    root.serve();
    let status = root.run(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(&format!("note: {why}")), "{text}");
    root.wait_log(&why);
}

/// A slot repo kept elsewhere, in a folder of no root (a `git/` store), and linked into
/// the root: the push said the config beside that repo was missing and to run `init`
/// there, which made a second root, whose default build the next push ran.
#[test]
fn a_push_into_a_slot_repo_kept_outside_any_root_says_so() {
    let mut root = Root::new();
    let store = root.path.parent().unwrap().join("git-store");
    std::fs::create_dir_all(&store).unwrap();
    let repo = root.path.join("blue.git");
    std::fs::rename(&repo, store.join("blue.git")).unwrap();
    std::os::unix::fs::symlink(store.join("blue.git"), &repo).unwrap();
    root.commit("v1", &[("VERSION", "v1\n")]);
    let pushed = root.push("blue");
    pushed.says(&format!(
        "{} is in no bluegreen root ({} has no bluegreen.toml nor slot folders): the hook finds its root by the repo's real folder, so a root's blue.git that links here deploys nothing;",
        store.join("blue.git").display(),
        store.display()
    ));
    let init_there = format!("bluegreen init {}", store.display());
    assert!(!pushed.text.contains(&init_there), "{}", pushed.text);
    assert!(!store.join("bluegreen.toml").exists());
    // `status` names the link, and not "a push of a new commit deploys it" beside it.
    root.serve();
    let status = root.run(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("the hook finds its root by the repo's real folder"),
        "{text}"
    );
    assert!(
        !text.contains("a push of a new commit deploys it"),
        "{text}"
    );
}
