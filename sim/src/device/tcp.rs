//! A device on the TCP protocol: HELLO, then one EVENTS batch at a time, each answered by an
//! ACK covering its highest seq before the next goes out.

use std::net::SocketAddr;

use super::{Cancelled, Device};
use crate::tcp::TcpDevice;

pub async fn run(device: &mut Device, addr: SocketAddr) -> Result<(), String> {
    let mut conn: Option<TcpDevice> = None;
    let batch = device.pace.batch;
    loop {
        if device.interrupted() {
            return Ok(());
        }
        device.fill(batch);
        if device.outbox.is_empty() {
            match device.next_due() {
                None => return Ok(()),
                Some(due) => {
                    if device.sleep_until(due).await == Err(Cancelled) {
                        return Ok(());
                    }
                    continue;
                }
            }
        }
        let link = match conn.as_mut() {
            Some(c) => c,
            None => match TcpDevice::connect_tls(
                addr,
                device.pace.credentials.tls.clone(),
                &device.outcome.id,
                device.pace.credentials.password_for(&device.outcome.id),
                device.session,
                device.pace.commands,
            )
            .await
            {
                Ok(c) => {
                    device.on_connect();
                    conn.insert(c)
                }
                Err(e) => {
                    device.after_failure(&e.to_string()).await?;
                    continue;
                }
            },
        };
        let events: Vec<_> = device.outbox.iter().take(batch).cloned().collect();
        for e in &events {
            device.on_send(e.seq);
        }
        let sent = tokio::time::timeout(device.pace.ack_timeout, link.send_batch(&events)).await;
        match sent {
            Ok(Ok(up_to)) => {
                device.ack_up_to(up_to);
                // Commands that came with the answer: obeyed, then answered.
                for command in std::mem::take(&mut link.commands) {
                    let answer = device.obey(&command);
                    if let Err(e) = link.answer(&command.id, &answer).await {
                        conn = None;
                        device.after_failure(&e.to_string()).await?;
                        break;
                    }
                }
            }
            Ok(Err(e)) => {
                conn = None;
                device.after_failure(&e.to_string()).await?;
            }
            Err(_) => {
                conn = None;
                let error = format!("no ACK within {:?}", device.pace.ack_timeout);
                device.after_failure(&error).await?;
            }
        }
    }
}
