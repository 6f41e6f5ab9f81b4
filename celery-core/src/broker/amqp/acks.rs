//! Acknowledgements of one consumer channel, sent in batches.
//!
//! RabbitMQ spends about as much on an acknowledgement as on a delivery, so a worker acking
//! every message on its own drains at less than half the rate it could. AMQP's `basic.ack` with
//! `multiple` settles every delivery up to a tag at once; this module sends one for each run of
//! acknowledged deliveries at the front of the channel's unsettled window.
//!
//! One task per channel (the settler) owns the window and is the only sender of acks and
//! rejects on it, which keeps them in order: a `multiple` ack never covers a delivery that is
//! still running, held for its ETA or rejected. On a busy channel it gathers what arrives while
//! the runtime is busy (it yields once before sending), so a busy worker sends few frames; an
//! idle one sends each acknowledgement at once.
//!
//! Deliveries settled behind one that is still unsettled (an ETA message held for a day, a long
//! task) are sent on their own, so that they do not count against the prefetch limit.

use std::collections::VecDeque;
use std::sync::Arc;

use lapin::options::{BasicAckOptions, BasicRejectOptions};
use lapin::Channel;
use tokio::sync::{mpsc, oneshot};

use crate::broker::{BrokerError, BrokerErrorKind};

/// What happens to a delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Ack,
    Reject { requeue: bool },
}

/// What the settler hears of.
enum Event {
    /// A delivery handed to the worker, in the channel's delivery-tag order.
    Delivered(u64),
    Settled {
        tag: u64,
        outcome: Outcome,
    },
    /// Answered once everything settled before it has been sent.
    Flush(oneshot::Sender<()>),
}

/// The sending side, one per consumer session; cheap to clone into each delivery's acker.
#[derive(Clone)]
pub(super) struct AckBatcher {
    inner: Arc<Batcher>,
}

struct Batcher {
    events: mpsc::UnboundedSender<Event>,
    /// To tell whether the channel is still open when a delivery is settled.
    channel: Channel,
}

impl AckBatcher {
    /// Starts the settler of `channel`. It keeps the channel open while any clone of the
    /// returned batcher lives (the consumer's, each delivery's acker), then sends what is left
    /// and ends; deliveries never settled then go back to their queue as the channel closes.
    pub(super) fn start(channel: Channel) -> Self {
        let (events, receiver) = mpsc::unbounded_channel();
        tokio::spawn(settle_loop(channel.clone(), receiver));
        AckBatcher {
            inner: Arc::new(Batcher { events, channel }),
        }
    }

    /// Registers a delivery before it is handed out; tags must come in increasing order.
    pub(super) fn delivered(&self, tag: u64) {
        // The settler only ends once every sender is gone, and `self` is one.
        let _ = self.inner.events.send(Event::Delivered(tag));
    }

    /// Queues the acknowledgement or rejection of a delivery. An error means the channel is
    /// already closed: the broker delivers the message again.
    fn settle(&self, tag: u64, outcome: Outcome) -> Result<(), BrokerError> {
        let action = match outcome {
            Outcome::Ack => "acknowledge",
            Outcome::Reject { .. } => "reject",
        };
        let closed = || {
            BrokerError::new(
                BrokerErrorKind::Channel,
                format!(
                    "cannot {action} the message: its channel is closed, the broker delivers it \
                     again"
                ),
            )
        };
        if !self.inner.channel.status().connected() {
            return Err(closed());
        }
        self.inner
            .events
            .send(Event::Settled { tag, outcome })
            .map_err(|_| closed())
    }

    /// Whether the deliveries of this channel can still be settled; once it closes, RabbitMQ
    /// delivers every unsettled one again.
    pub(super) fn channel_open(&self) -> bool {
        self.inner.channel.status().connected()
    }

    pub(super) fn ack(&self, tag: u64) -> Result<(), BrokerError> {
        self.settle(tag, Outcome::Ack)
    }

    pub(super) fn reject(&self, tag: u64, requeue: bool) -> Result<(), BrokerError> {
        self.settle(tag, Outcome::Reject { requeue })
    }

    /// Waits until everything settled so far has been sent (or the channel is gone).
    pub(super) async fn flush(&self) {
        let (done, sent) = oneshot::channel();
        if self.inner.events.send(Event::Flush(done)).is_ok() {
            let _ = sent.await;
        }
    }
}

/// A delivery in the window: unsettled, or settled and waiting to be sent.
struct Slot {
    tag: u64,
    settled: Option<Outcome>,
}

/// The channel's unsettled deliveries in tag order, and what to send for them.
#[derive(Default)]
struct Window {
    slots: VecDeque<Slot>,
    /// The tags settled since the last frames were taken: those left behind an unsettled
    /// delivery are found by them, without a pass over the whole window (which holds every
    /// ETA message the worker waits on: a pass per turn cost time in proportion to them).
    settled: Vec<u64>,
}

/// A frame to send, in order.
#[derive(Debug, PartialEq)]
enum Frame {
    /// `basic.ack` up to and including this delivery when `multiple`, else of it alone.
    Ack {
        tag: u64,
        multiple: bool,
    },
    Reject {
        tag: u64,
        requeue: bool,
    },
}

impl Window {
    fn apply(&mut self, event: Event) {
        match event {
            Event::Delivered(tag) => self.slots.push_back(Slot { tag, settled: None }),
            Event::Flush(_) => {}
            Event::Settled { tag, outcome } => {
                let index = self.slots.partition_point(|slot| slot.tag < tag);
                match self.slots.get_mut(index) {
                    Some(slot) if slot.tag == tag && slot.settled.is_none() => {
                        slot.settled = Some(outcome);
                        self.settled.push(tag);
                    }
                    // Not registered (cannot happen through `AmqpConsumer`) or settled twice:
                    // acking a tag twice would close the channel, so the second answer is
                    // dropped.
                    _ => tracing::warn!(tag, "a delivery was settled twice or never registered"),
                }
            }
        }
    }

    /// Takes what can be sent now: each run of acknowledged deliveries at the front of the
    /// window as one `multiple` ack, rejections in their place, and settled deliveries behind
    /// the first unsettled one on their own.
    fn take_frames(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut run: Option<u64> = None;
        while let Some(&Slot {
            tag,
            settled: Some(outcome),
        }) = self.slots.front()
        {
            self.slots.pop_front();
            match outcome {
                Outcome::Ack => run = Some(tag),
                Outcome::Reject { requeue } => {
                    // The run so far goes out first and stops there: no `multiple` ack may
                    // cover a rejected delivery.
                    if let Some(last) = run.take() {
                        frames.push(Frame::Ack {
                            tag: last,
                            multiple: true,
                        });
                    }
                    frames.push(Frame::Reject { tag, requeue });
                }
            }
        }
        if let Some(last) = run {
            frames.push(Frame::Ack {
                tag: last,
                multiple: true,
            });
        }
        // What was settled and is still here sits behind an unsettled delivery: sent on its
        // own. (Most are recent deliveries, near the back, where removing is cheap.)
        let mut settled = std::mem::take(&mut self.settled);
        settled.sort_unstable();
        for tag in settled.drain(..) {
            let index = self.slots.partition_point(|slot| slot.tag < tag);
            if self.slots.get(index).is_none_or(|slot| slot.tag != tag) {
                continue; // Sent with the run at the front.
            }
            let Some(Slot {
                settled: Some(outcome),
                ..
            }) = self.slots.remove(index)
            else {
                unreachable!("only settled deliveries are listed")
            };
            frames.push(match outcome {
                Outcome::Ack => Frame::Ack {
                    tag,
                    multiple: false,
                },
                Outcome::Reject { requeue } => Frame::Reject { tag, requeue },
            });
        }
        // The list's allocation is kept for the next turn.
        self.settled = settled;
        frames
    }
}

async fn settle_loop(channel: Channel, mut events: mpsc::UnboundedReceiver<Event>) {
    let mut window = Window::default();
    let mut flushes = Vec::new();
    // Whether the last turn found more than one event: a busy channel.
    let mut busy = false;
    while let Some(event) = events.recv().await {
        let mut received = 1;
        let mut apply = |event| match event {
            Event::Flush(done) => flushes.push(done),
            event => window.apply(event),
        };
        apply(event);
        if busy {
            // Let the tasks that are ready run first: what they settle joins this batch. An
            // idle channel does not wait: its acknowledgement goes at once, ahead of the task's
            // result (a publisher's confirm can wait for it).
            tokio::task::yield_now().await;
        }
        while let Ok(event) = events.try_recv() {
            apply(event);
            received += 1;
        }
        busy = received > 1;
        for frame in window.take_frames() {
            send(&channel, frame).await;
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
    // Every sender is gone; deliveries never settled go back to their queue when the channel
    // closes, which dropping it here does once the consumer has let go of it too.
}

async fn send(channel: &Channel, frame: Frame) {
    let (action, sent) = match frame {
        Frame::Ack { tag, multiple } => (
            "acknowledge",
            channel.basic_ack(tag, BasicAckOptions { multiple }).await,
        ),
        Frame::Reject { tag, requeue } => (
            "reject",
            channel
                .basic_reject(tag, BasicRejectOptions { requeue })
                .await,
        ),
    };
    if let Err(error) = sent {
        // The channel closed meanwhile: the broker delivers the messages again.
        tracing::debug!(%error, action, "could not settle messages; the broker delivers them again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(delivered: impl IntoIterator<Item = u64>) -> Window {
        let mut window = Window::default();
        for tag in delivered {
            window.apply(Event::Delivered(tag));
        }
        window
    }

    fn ack(window: &mut Window, tag: u64) {
        window.apply(Event::Settled {
            tag,
            outcome: Outcome::Ack,
        });
    }

    fn reject(window: &mut Window, tag: u64, requeue: bool) {
        window.apply(Event::Settled {
            tag,
            outcome: Outcome::Reject { requeue },
        });
    }

    fn multiple(tag: u64) -> Frame {
        Frame::Ack {
            tag,
            multiple: true,
        }
    }

    fn single(tag: u64) -> Frame {
        Frame::Ack {
            tag,
            multiple: false,
        }
    }

    #[test]
    fn a_run_of_acks_at_the_front_is_one_multiple_ack() {
        let mut window = window(1..=5);
        for tag in 1..=3 {
            ack(&mut window, tag);
        }
        assert_eq!(window.take_frames(), vec![multiple(3)]);
        assert_eq!(window.take_frames(), vec![]);
        ack(&mut window, 5);
        ack(&mut window, 4);
        assert_eq!(window.take_frames(), vec![multiple(5)]);
        assert!(window.slots.is_empty());
    }

    #[test]
    fn a_multiple_ack_never_covers_an_unsettled_delivery() {
        // 2 is held (an ETA message): 1 goes as a multiple ack, 3 and 4 on their own.
        let mut window = window(1..=4);
        for tag in [1, 3, 4] {
            ack(&mut window, tag);
        }
        assert_eq!(
            window.take_frames(),
            vec![multiple(1), single(3), single(4)]
        );
        assert_eq!(window.slots.len(), 1);
        ack(&mut window, 2);
        assert_eq!(window.take_frames(), vec![multiple(2)]);
    }

    #[test]
    fn rejections_keep_their_place_between_acks() {
        let mut window = window(1..=6);
        ack(&mut window, 1);
        ack(&mut window, 2);
        reject(&mut window, 3, false);
        ack(&mut window, 4);
        reject(&mut window, 6, true);
        assert_eq!(
            window.take_frames(),
            vec![
                multiple(2),
                Frame::Reject {
                    tag: 3,
                    requeue: false
                },
                multiple(4),
                Frame::Reject {
                    tag: 6,
                    requeue: true
                },
            ]
        );
        assert_eq!(window.slots.iter().map(|s| s.tag).collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn deliveries_settled_behind_a_held_one_go_out_in_tag_order_and_leave_it_alone() {
        let mut window = window(1..=1000);
        // 1 is held; the others are settled in reverse order over several turns.
        for tag in (501..=1000).rev() {
            ack(&mut window, tag);
        }
        let frames = window.take_frames();
        assert_eq!(frames, (501..=1000).map(single).collect::<Vec<_>>());
        reject(&mut window, 7, true);
        ack(&mut window, 2);
        assert_eq!(
            window.take_frames(),
            vec![
                single(2),
                Frame::Reject {
                    tag: 7,
                    requeue: true
                }
            ]
        );
        assert_eq!(window.slots.len(), 1000 - 500 - 2);
        assert!(window.settled.is_empty());
        for tag in (3..=500).filter(|&tag| tag != 7) {
            ack(&mut window, tag);
        }
        ack(&mut window, 1);
        assert_eq!(window.take_frames(), vec![multiple(500)]);
        assert!(window.slots.is_empty() && window.settled.is_empty());
    }

    #[test]
    fn a_second_answer_for_a_delivery_is_dropped() {
        let mut window = window(1..=2);
        ack(&mut window, 2);
        reject(&mut window, 2, true);
        ack(&mut window, 7);
        assert_eq!(window.take_frames(), vec![single(2)]);
        ack(&mut window, 1);
        assert_eq!(window.take_frames(), vec![multiple(1)]);
    }
}
