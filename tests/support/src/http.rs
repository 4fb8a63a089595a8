//! The fake cluster over plain HTTP on 127.0.0.1, for a test that runs the
//! `stash` binary itself (a spawned process cannot use the in-process
//! `kube::Client` of [`crate::Cluster::client`]): every request is served as
//! one identity, as if the process ran with that ServiceAccount's token.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{Cluster, Identity};

/// A listener serving the cluster; stops when dropped.
pub struct Served {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Served {
    /// Writes a kubeconfig pointing at this server into `dir`, and returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\n",
            self.addr
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }
}

impl Cluster {
    /// Serves this cluster on 127.0.0.1 (a free port) as `identity`.
    pub async fn serve_http(&self, identity: Identity) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (shared, identity) = (shared.clone(), identity.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (shared, identity) = (shared.clone(), identity.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let bytes = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let req = http::Request::from_parts(
                                    parts,
                                    kube::client::Body::from(bytes),
                                );
                                Ok::<_, Infallible>(
                                    super::api_server::serve_http(shared, identity, req).await,
                                )
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Served { addr, task }
    }
}
