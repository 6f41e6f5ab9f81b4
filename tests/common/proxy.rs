//! A TCP proxy to RabbitMQ on 127.0.0.1 that a test can break: cut every open connection (as a
//! network failure or a broker restart would) and refuse new ones for a while.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A proxy on an ephemeral port of 127.0.0.1; dropping it stops it and cuts its connections.
pub struct Proxy {
    address: SocketAddr,
    state: Arc<State>,
}

struct State {
    target: SocketAddr,
    up: AtomicBool,
    stopped: AtomicBool,
    /// Both ends of every open connection, to cut them.
    sockets: Mutex<Vec<TcpStream>>,
    accepted: AtomicUsize,
    refused: AtomicUsize,
}

impl Proxy {
    /// A proxy to RabbitMQ at 127.0.0.1:5672.
    pub fn rabbitmq() -> io::Result<Proxy> {
        Proxy::start(SocketAddr::from(([127, 0, 0, 1], 5672)))
    }

    pub fn start(target: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let state = Arc::new(State {
            target,
            up: AtomicBool::new(true),
            stopped: AtomicBool::new(false),
            sockets: Mutex::default(),
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        });
        let shared = state.clone();
        std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || accept(listener, shared))?;
        Ok(Proxy { address, state })
    }

    /// The AMQP URL through the proxy (guest/guest, vhost `/`).
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}//", self.address.port())
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Cuts every open connection; new ones are still let through.
    pub fn cut(&self) {
        let sockets = std::mem::take(&mut *self.state.sockets.lock().unwrap());
        for socket in sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// The broker becomes unreachable: open connections are cut and new ones are closed as
    /// soon as they are accepted, until [`restore`](Proxy::restore).
    pub fn take_down(&self) {
        self.state.up.store(false, Ordering::SeqCst);
        self.cut();
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.state.up.store(true, Ordering::SeqCst);
    }

    /// Connections let through so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections closed on arrival while the proxy was down.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the accept loop so that it sees `stopped` and ends.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
    }
}

fn accept(listener: TcpListener, state: Arc<State>) {
    for client in listener.incoming() {
        if state.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if !state.up.load(Ordering::SeqCst) {
            state.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&state.target, Duration::from_secs(2)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = (client.set_nodelay(true), server.set_nodelay(true));
        let clones = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        );
        let (Ok(client_read), Ok(server_read), Ok(client_kept), Ok(server_kept)) = clones else {
            continue;
        };
        state.accepted.fetch_add(1, Ordering::SeqCst);
        state
            .sockets
            .lock()
            .unwrap()
            .extend([client_kept, server_kept]);
        pipe(client_read, server);
        pipe(server_read, client);
    }
}

/// Copies one direction until either side closes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::thread::Builder::new()
        .name("fault-proxy-pipe".into())
        .spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        });
}
