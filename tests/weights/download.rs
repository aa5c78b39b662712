//! Resolving encoder weights: explicit paths, the cache, and download
//! with trust on first use or a published hash, from a local server.

use super::{err_of, fixture, tiny_reg};

use dinomaly::backbone::download::{record_path, Resolver, Source, Verification};
use dinomaly::backbone::registry::{find_backbone, Backbone};
use dinomaly::backbone::weights::LoadOptions;
use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Serves `body` at `/tiny/tiny_pretrain.pth` on 127.0.0.1 (404 elsewhere)
/// from a thread; with `short`, announces more bytes than it sends.
fn serve(body: Vec<u8>, short: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            if path == "/tiny/tiny_pretrain.pth" {
                let announced = if short { body.len() + 100 } else { body.len() };
                let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n");
                let _ = stream.write_all(&body);
            } else {
                let _ = write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        }
    });
    base
}

fn tiny_backbone(sha256: Option<&str>) -> Backbone {
    Backbone {
        name: "tiny",
        aliases: &[],
        file_name: "tiny_pretrain.pth",
        url_path: "tiny/tiny_pretrain.pth",
        arch: tiny_reg(),
        target_layers: &[0, 1],
        sha256: sha256.map(|s| &*Box::leak(s.to_string().into_boxed_str())),
        size: None,
    }
}

fn resolver(cache: &std::path::Path, base: &str) -> Resolver {
    Resolver {
        cache_dir: cache.to_path_buf(),
        base_url: base.to_string(),
        allow_download: true,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
    }
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn meta_bytes_and_sha() -> (Vec<u8>, String) {
    let p = fixture("meta_reg.pth");
    (std::fs::read(&p).unwrap(), dinomaly::io::hash::sha256_file(&p).unwrap())
}

#[test]
fn download_trust_on_first_use_then_cache() {
    let (body, sha) = meta_bytes_and_sha();
    let base = serve(body.clone(), false);
    let dir = tempfile::tempdir().unwrap();
    let bb = tiny_backbone(None);
    let mut seen = (0, None);
    let r = resolver(dir.path(), &base).resolve(&bb, None, None, &mut |d, t| seen = (d, t)).unwrap();
    assert_eq!(
        (r.source, r.verification, r.sha256.as_str()),
        (Source::Downloaded, Verification::FirstUse, sha.as_str())
    );
    assert_eq!(seen, (body.len() as u64, Some(body.len() as u64)));
    assert_eq!(std::fs::read(&r.path).unwrap(), body);
    assert_eq!(std::fs::read_to_string(record_path(&r.path)).unwrap(), format!("{sha}  tiny_pretrain.pth\n"));
    assert_eq!(files_in(dir.path()), ["tiny_pretrain.pth", "tiny_pretrain.pth.sha256"]);
    // The cached files get the mode File::create gives under this
    // process's umask (0644 under 022), not a temporary file's 0600.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        assert_eq!(mode(&r.path), mode(&plain), "downloaded weights");
        assert_eq!(mode(&record_path(&r.path)), mode(&plain), "their sha256 record");
        std::fs::remove_file(plain).unwrap();
    }
    // Later uses need no network and check the record.
    let offline = resolver(dir.path(), "http://127.0.0.1:9");
    let r2 = offline.resolve(&bb, None, None, &mut |_, _| {}).unwrap();
    assert_eq!((r2.source, r2.verification), (Source::Cache, Verification::Recorded));
    // The loaded weights are the tiny ViT.
    let w = dinomaly::backbone::weights::load_encoder_weights_with(
        &r2.path,
        Some(&bb.arch),
        &LoadOptions { known_sha256: Some(r2.sha256.clone()), ..Default::default() },
    )
    .unwrap();
    assert_eq!(w.sha256, sha);
    // A changed file is caught.
    let mut changed = body.clone();
    changed.push(0);
    std::fs::write(&r.path, &changed).unwrap();
    let e = err_of(offline.resolve(&bb, None, None, &mut |_, _| {}));
    assert!(e.contains("recorded") && e.contains("the file changed"), "{e}");
    // A user-given hash is checked too.
    std::fs::write(&r.path, &body).unwrap();
    let e = err_of(offline.resolve(&bb, None, Some(&"0".repeat(64)), &mut |_, _| {}));
    assert!(e.contains(&format!("sha256 is {sha}, but {} was asked for", "0".repeat(64))), "{e}");
}

#[test]
fn download_with_published_hash() {
    let (body, sha) = meta_bytes_and_sha();
    let base = serve(body, false);
    let dir = tempfile::tempdir().unwrap();
    let bb = tiny_backbone(Some(&sha));
    let r = resolver(dir.path(), &base).resolve(&bb, None, Some(&sha.to_uppercase()), &mut |_, _| {}).unwrap();
    assert_eq!(r.verification, Verification::Published);
    let r = resolver(dir.path(), &base).resolve(&bb, None, None, &mut |_, _| {}).unwrap();
    assert_eq!((r.source, r.verification), (Source::Cache, Verification::Published));
}

#[test]
fn download_with_wrong_hash_keeps_nothing() {
    let (body, sha) = meta_bytes_and_sha();
    let base = serve(body, false);
    let dir = tempfile::tempdir().unwrap();
    let wrong = "ab".repeat(32);
    let bb = tiny_backbone(Some(&wrong));
    let e = err_of(resolver(dir.path(), &base).resolve(&bb, None, None, &mut |_, _| {}));
    assert!(
        e.contains(&format!("the download has sha256 {sha}, but the published hash is {wrong}; nothing was kept")),
        "{e}"
    );
    assert!(files_in(dir.path()).is_empty(), "{:?}", files_in(dir.path()));
}

#[test]
fn download_failures_say_where_to_put_the_file() {
    let (body, _) = meta_bytes_and_sha();
    let dir = tempfile::tempdir().unwrap();
    let bb = tiny_backbone(None);
    // 404.
    let base = serve(body.clone(), false);
    let missing = Backbone { url_path: "nope/tiny_pretrain.pth", ..bb };
    let e = err_of(resolver(dir.path(), &base).resolve(&missing, None, None, &mut |_, _| {}));
    let want = format!(
        "no weights for tiny: put tiny_pretrain.pth (from {base}/nope/tiny_pretrain.pth) in {} or pass --weights PATH (download failed: HTTP 404)",
        dir.path().display()
    );
    assert_eq!(e, want);
    // A server that announces more than it sends.
    let base = serve(body, true);
    let e = err_of(resolver(dir.path(), &base).resolve(&bb, None, None, &mut |_, _| {}));
    assert!(e.contains("nothing was kept") || e.contains("download interrupted"), "{e}");
    assert!(files_in(dir.path()).is_empty(), "{:?}", files_in(dir.path()));
    // Connection refused, quickly.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = Instant::now();
    let e = err_of(resolver(dir.path(), &format!("http://127.0.0.1:{port}")).resolve(&bb, None, None, &mut |_, _| {}));
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    assert!(e.starts_with("no weights for tiny: put tiny_pretrain.pth") && e.contains("download failed"), "{e}");
    // Downloads switched off.
    let off = Resolver { allow_download: false, ..resolver(dir.path(), "http://127.0.0.1:9") };
    let e = err_of(off.resolve(&bb, None, None, &mut |_, _| {}));
    assert!(e.ends_with("(downloads are off (DINOMALY_OFFLINE))"), "{e}");
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn explicit_paths_and_cached_files_of_published_backbones() {
    let (_, sha) = meta_bytes_and_sha();
    let dir = tempfile::tempdir().unwrap();
    let r = resolver(dir.path(), "http://127.0.0.1:9");
    let bb = tiny_backbone(None);
    let given = r.resolve(&bb, Some(&fixture("meta_reg.pth")), None, &mut |_, _| {}).unwrap();
    assert_eq!(
        (given.source, given.verification, given.sha256.as_str()),
        (Source::Explicit, Verification::Unchecked, sha.as_str())
    );
    let given = r.resolve(&bb, Some(&fixture("meta_reg.pth")), Some(&sha), &mut |_, _| {}).unwrap();
    assert_eq!(given.verification, Verification::UserGiven);
    assert!(
        err_of(r.resolve(&bb, Some(&fixture("meta_reg.pth")), Some("xyz"), &mut |_, _| {})).contains("not a sha256")
    );
    // A file put in the cache by hand for a backbone with a published hash
    // must be that file.
    let b = find_backbone("dinov2_vits14").unwrap();
    std::fs::write(dir.path().join(b.file_name), b"not the weights").unwrap();
    let e = err_of(r.resolve(b, None, None, &mut |_, _| {}));
    assert!(e.contains("but the published dinov2_vits14_pretrain.pth has b938bf1b"), "{e}");
    // One without a published hash is recorded on first use.
    let b = find_backbone("dinov2_vits14_reg4").unwrap();
    std::fs::copy(fixture("meta_reg.pth"), dir.path().join(b.file_name)).unwrap();
    let first = r.resolve(b, None, None, &mut |_, _| {}).unwrap();
    assert_eq!((first.source, first.verification), (Source::Cache, Verification::FirstUse));
    assert!(first.describe().contains("recorded now"));
    assert_eq!(r.resolve(b, None, None, &mut |_, _| {}).unwrap().verification, Verification::Recorded);
}
