//! `cargo xtask serve`: build the page and serve `dist/` on 127.0.0.1.
//!
//! A small static file server of our own, so that the page is served
//! exactly as a static host would serve it — no live-reload socket, the same headers in tests and
//! in use — and so the end-to-end tests can run it in-process.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::setup;
use crate::util::{Result, fmt_duration, root, step};

/// The page's Content-Security-Policy, from its one source: the `<meta http-equiv>` element of
/// `index.html` (so that any static host enforces it). The server sends the same policy as a header.
/// It allows only same-origin resources and wasm compilation: audio never leaves the device.
pub fn page_csp(dist: &Path) -> Result<String> {
    let path = dist.join("index.html");
    let html =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let start = html
        .find(r#"http-equiv="Content-Security-Policy""#)
        .and_then(|i| {
            html[i..]
                .find(r#"content=""#)
                .map(|j| i + j + r#"content=""#.len())
        })
        .ok_or_else(|| {
            format!(
                "{} has no Content-Security-Policy meta element",
                path.display()
            )
        })?;
    let len = html[start..]
        .find('"')
        .ok_or_else(|| format!("{}: unterminated CSP content", path.display()))?;
    Ok(html[start..start + len].to_string())
}

pub fn run(args: &[String]) -> Result<()> {
    let mut port: u16 = 8080;
    let mut build = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => {
                let v = it.next().ok_or("--port needs a number")?;
                port = v
                    .parse()
                    .map_err(|_| format!("--port: `{v}` is not a port number"))?;
            }
            "--no-build" => build = false,
            other => {
                return Err(format!(
                    "serve: unknown option `{other}` (options: --port N, --no-build)"
                ));
            }
        }
    }
    let started = std::time::Instant::now();
    let dist = if build {
        let bindgen = step(
            "install what the page build needs",
            setup::ensure_page_tools,
        )?;
        step(
            "build the page (wasm32, wasm-release + wasm-bindgen)",
            || setup::build_page(&bindgen),
        )?
        .dist
    } else {
        root().join("dist")
    };
    if !dist.join("index.html").is_file() {
        return Err(format!(
            "{} has no index.html: run without --no-build",
            dist.display()
        ));
    }
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e} (try --port N)"))?;
    println!(
        "\nready in {}; Duet is served at http://127.0.0.1:{port}/  (Ctrl-C stops)",
        fmt_duration(started.elapsed().as_secs_f64())
    );
    let csp = page_csp(&dist)?;
    serve_forever(listener, dist, csp, Arc::new(AtomicBool::new(false)), false);
    Ok(())
}

/// A running static server (used by the e2e tests): its address, and a flag that stops it.
pub struct Server {
    pub url: String,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl Server {
    /// Serves `dist` on an ephemeral loopback port in a background thread.
    pub fn start(dist: PathBuf) -> Result<Server> {
        let listener =
            TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("binding a port: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let csp = page_csp(&dist)?;
        std::thread::spawn(move || serve_forever(listener, dist, csp, stop2, true));
        Ok(Server {
            url: format!("http://{addr}/"),
            stop,
            addr,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_forever(
    listener: TcpListener,
    dist: PathBuf,
    csp: String,
    stop: Arc<AtomicBool>,
    quiet: bool,
) {
    let dist = Arc::new(dist);
    let csp = Arc::new(csp);
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else { continue };
        let (dist, csp) = (dist.clone(), csp.clone());
        std::thread::spawn(move || {
            if let Err(e) = handle(stream, &dist, &csp, quiet)
                && !quiet
            {
                eprintln!("serve: {e}");
            }
        });
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "wav" => "audio/wav",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

/// Maps a request path to a file under `dist`, refusing anything that leaves it.
fn resolve(dist: &Path, url_path: &str) -> Option<PathBuf> {
    let path = url_path.split(['?', '#']).next().unwrap_or("/");
    let mut out = dist.to_path_buf();
    for comp in Path::new(path.trim_start_matches('/')).components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if out.is_dir() {
        out.push("index.html");
    }
    out.is_file().then_some(out)
}

fn handle(mut stream: TcpStream, dist: &Path, csp: &str, quiet: bool) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers (we serve every request the same way).
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("/");
    let (status, ctype, body) = if method != "GET" && method != "HEAD" {
        (
            "405 Method Not Allowed",
            "text/plain",
            b"method not allowed".to_vec(),
        )
    } else {
        match resolve(dist, target).and_then(|p| std::fs::read(&p).ok().map(|b| (p, b))) {
            Some((p, b)) => ("200 OK", content_type(&p), b),
            None => ("404 Not Found", "text/plain", b"not found".to_vec()),
        }
    };
    if !quiet {
        println!("{method} {target} -> {status}");
    }
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: {csp}\r\nX-Content-Type-Options: nosniff\r\n\
         Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes())?;
    if method != "HEAD" {
        stream.write_all(&body)?;
    }
    stream.flush()
}
