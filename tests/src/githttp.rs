//! A small git smart-HTTP server on loopback for tests: `git http-backend` (CGI) behind HTTP
//! basic authentication, one thread per connection, every request logged so a test can count
//! what the daemon asked for.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where Debian puts `git http-backend`.
pub const HTTP_BACKEND: &str = "/usr/lib/git-core/git-http-backend";

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The git protocol v2 command of an upload-pack POST (`ls-refs`, `fetch`), if any.
    pub command: Option<String>,
}

/// The running server; stops when dropped.
pub struct GitHttp {
    pub port: u16,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Logged>>>,
    /// The password the server expects (changeable while it runs).
    pub password: Arc<Mutex<String>>,
}

impl GitHttp {
    /// Serves the bare repositories under `root`, with user `user` and password `password`.
    pub fn start(root: &Path, user: &str, password: &str) -> Option<GitHttp> {
        if !Path::new(HTTP_BACKEND).exists() {
            return None;
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let pass = Arc::new(Mutex::new(password.to_owned()));
        let (root, user) = (root.to_path_buf(), user.to_owned());
        let (s, l, p) = (stop.clone(), log.clone(), pass.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (root, user, l, p) = (root.clone(), user.clone(), l.clone(), p.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &root, &user, &p, &l);
                });
            }
        });
        Some(GitHttp { port, stop, log, password: pass })
    }

    /// `http://127.0.0.1:PORT/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    stream: TcpStream,
    root: &Path,
    user: &str,
    password: &Mutex<String>,
    log: &Mutex<Vec<Logged>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let command = (method == "POST" && path.ends_with("git-upload-pack"))
        .then(|| {
            let text = String::from_utf8_lossy(&body);
            ["ls-refs", "fetch"].into_iter().find(|c| text.contains(&format!("command={c}"))).map(str::to_owned)
        })
        .flatten();
    let expected = format!(
        "Basic {}",
        keelson::source::transport::base64_encode(format!("{user}:{}", password.lock().unwrap()).as_bytes())
    );
    if header("authorization").as_deref() != Some(expected.as_str()) {
        log.lock().unwrap().push(Logged { method, path: path.to_owned(), status: 401, command });
        writer.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let mut cgi = Command::new(HTTP_BACKEND);
    cgi.env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", &method)
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(enc) = header("content-encoding") {
        cgi.env("HTTP_CONTENT_ENCODING", enc);
    }
    if let Some(proto) = header("git-protocol") {
        cgi.env("GIT_PROTOCOL", proto);
    }
    let mut child = cgi.spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut out = Vec::new();
    child.stdout.take().expect("piped").read_to_end(&mut out)?;
    let _ = feeder.join();
    let _ = child.wait();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, rest) = match split {
        Some((i, n)) => (String::from_utf8_lossy(&out[..i]).into_owned(), &out[i + n..]),
        None => (String::new(), &out[..]),
    };
    let mut status = 200;
    let mut response_headers = String::new();
    for h in head.lines() {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => {
                status = v.trim().split(' ').next().and_then(|s| s.parse().ok()).unwrap_or(200);
            }
            Some(_) => {
                response_headers.push_str(h.trim_end());
                response_headers.push_str("\r\n");
            }
            None => {}
        }
    }
    log.lock().unwrap().push(Logged { method, path: path.to_owned(), status, command });
    write!(
        writer,
        "HTTP/1.1 {status} X\r\n{response_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        rest.len()
    )?;
    writer.write_all(rest)?;
    Ok(())
}

/// A bare repository under `root` named `name`, cloned from `from`, that accepts pushes over HTTP.
pub fn bare_clone(root: &Path, name: &str, from: &Path) -> PathBuf {
    let dest = root.join(name);
    crate::git(root, &["clone", "-q", "--bare", from.to_str().unwrap(), dest.to_str().unwrap()]);
    crate::git(&dest, &["config", "http.receivepack", "true"]);
    dest
}
