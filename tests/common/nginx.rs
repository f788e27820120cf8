//! A real nginx (Debian's, installed by `scripts/setup`) running the shipped
//! `deploy/scale/nginx.conf` on loopback: the replicas' addresses and the listen port are put in
//! for the compose names, and the process runs in the foreground as one process with its files
//! in a temporary directory. Killed on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx balancing over `replicas` (the shipped file names two).
    pub fn start(replicas: [SocketAddr; 2]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let shipped = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/scale/nginx.conf"
        ))
        .expect("deploy/scale/nginx.conf");
        let root = dir.path().display();
        let local = shipped
            .replace("condenser-a:8787", &replicas[0].to_string())
            .replace("condenser-b:8787", &replicas[1].to_string())
            .replace("listen 8080;", &format!("listen {addr};"))
            .replace(
                "http {",
                &format!(
                    "http {{\n    access_log off;\n    client_body_temp_path {root}/body;\n    \
                     proxy_temp_path {root}/proxy;\n    fastcgi_temp_path {root}/fastcgi;\n    \
                     uwsgi_temp_path {root}/uwsgi;\n    scgi_temp_path {root}/scgi;"
                ),
            );
        assert_ne!(local, shipped, "the shipped file has the expected names");
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\n{local}"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        // Debian puts it in /usr/sbin, which a user's PATH may lack.
        let binary = if std::path::Path::new("/usr/sbin/nginx").is_file() {
            "/usr/sbin/nginx"
        } else {
            "nginx"
        };
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed (scripts/setup installs it)");
        let mut nginx = Self { child, addr, dir };
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}): {}", nginx.errors());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// nginx's error log.
    pub fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
