//! Upgrading bluegreen: a root that an older version left, served and deployed by this
//! one. The older version's files are written by each test as that version wrote them
//! (its `state.json`, its release metadata), standing in for the old binary.

use std::fs;
use std::time::Duration;

use crate::util::*;

/// Makes blue's releases look as a bluegreen from before the release marks left them:
/// metadata without `marks`, no `.bluegreen-was-current` or `.bluegreen-went-live`, and a
/// `state.json` with the three fields that version knew.
fn as_before_the_marks(root: &Root) {
    for id in root.releases("blue") {
        let dir = root.path.join("blue/releases").join(&id);
        for mark in [".bluegreen-was-current", ".bluegreen-went-live"] {
            let _ = fs::remove_file(dir.join(mark));
        }
        let file = dir.join(".bluegreen-release.json");
        let mut meta: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
        meta.as_object_mut().unwrap().remove("marks");
        fs::write(&file, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    }
    fs::write(
        root.path.join("state.json"),
        r#"{"active": "blue", "mirroring": true, "last_switch": null}"#,
    )
    .unwrap();
}

#[test]
fn rollback_goes_back_through_the_releases_an_older_version_made() {
    let mut root = blue_live();
    let [v1, v2, v3] = <[String; 3]>::try_from(deploy_versions(&root, &["v2", "v3"])).unwrap();
    root.stop_serve();
    as_before_the_marks(&root);

    // The upgraded daemon serves v3 and marks it live: the first mark in the slot.
    root.serve();
    root.wait_body(root.blue, "v3 from blue");
    let v3_live = root
        .path
        .join("blue/releases")
        .join(&v3)
        .join(".bluegreen-went-live");
    wait_for(Duration::from_secs(10), "v3 marked live", || {
        v3_live.is_file().then_some(())
    });
    let listed = root.run_ok(&["releases", "blue"]);
    assert!(!listed.contains("(never"), "{listed}");

    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), v2);
    root.wait_body(root.blue, "v2 from blue");
    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), v1);
    root.wait_body(root.blue, "v1 from blue");
}

#[test]
fn a_promoted_release_of_an_older_version_gets_the_marks() {
    let mut root = blue_live();
    root.stop_serve();
    as_before_the_marks(&root);
    root.serve();
    root.wait_body(root.blue, "v1 from blue");

    root.run_ok(&["promote", "blue", "green"]);
    let promoted = root.current("green").unwrap();
    let meta: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(
            root.path
                .join("green/releases")
                .join(&promoted)
                .join(".bluegreen-release.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(meta["marks"], true, "{meta}");
}

#[test]
fn an_older_versions_marks_still_pass_over_its_failed_push() {
    let mut root = blue_live();
    let v1 = root.current("blue").unwrap();
    root.commit("crash", &[("VERSION", "v2\n"), ("CRASH", "")]);
    root.push("blue").says("blue keeps serving generation");
    root.remove("CRASH");
    root.commit("v3", &[("VERSION", "v3\n")]);
    root.push("blue").says("blue: live in ");
    root.stop_serve();
    // A version that marked its releases, but wrote no `marks` in their metadata.
    for id in root.releases("blue") {
        let file = root
            .path
            .join("blue/releases")
            .join(&id)
            .join(".bluegreen-release.json");
        let mut meta: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
        meta.as_object_mut().unwrap().remove("marks");
        fs::write(&file, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    }

    root.serve();
    root.wait_body(root.blue, "v3 from blue");
    assert!(root
        .run_ok(&["releases", "blue"])
        .contains("crash  (never went live)"));
    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), v1);
}
