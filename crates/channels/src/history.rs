//! A channel's history, read the same way whichever broker holds it:
//! which messages are still in it (count and age), what a `history` query
//! answers, and whether a subscriber can recover from its last position.
//!
//! A broker hands these functions the newest messages it holds, oldest
//! first and without a gap (each one's offset is one more than the one
//! before, the last is the stream's position), so that both brokers give
//! the same answers from the same rules.

use crate::broker::{RetainedView, StreamPosition};
use sente_lite_protocol::{ChannelConfig, ChannelMessage, Position, Reason};
use std::collections::VecDeque;

/// A channel's history as a broker read it.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// The channel's settings (`history-size`, `history-ttl-ms`,
    /// `message-retention`).
    pub config: ChannelConfig,
    /// The stream's position when it was read.
    pub position: StreamPosition,
    /// The newest messages held, oldest first, without a gap, ending at
    /// `position` (or empty). May hold more than the history keeps (the
    /// age and size rules are applied by the readers below).
    pub messages: VecDeque<ChannelMessage>,
}

/// What a join with `recover` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovery {
    /// Every message after the asked position, oldest first (possibly
    /// none: the subscriber missed nothing).
    Recovered(Vec<ChannelMessage>),
    /// It cannot be recovered: [`Reason::EpochChanged`] or
    /// [`Reason::TooFarBehind`].
    Missed(Reason),
}

/// The index of the first message of `held` that is still in the history
/// at `now` (ms since the Unix epoch): of the newest `history_len()`, those
/// after the last one older than `history-ttl-ms`.
pub fn first_live(held: &VecDeque<ChannelMessage>, config: &ChannelConfig, now: i64) -> usize {
    let from = held.len().saturating_sub(config.history_len());
    if config.history_ttl_ms == 0 {
        return from;
    }
    let ttl = i64::try_from(config.history_ttl_ms).unwrap_or(i64::MAX);
    let cutoff = now.saturating_sub(ttl);
    // Publish times may be a little out of order (taken before the
    // stream's lock): the history is what follows the newest expired one,
    // so that it never has a gap.
    match held
        .iter()
        .skip(from)
        .rposition(|m| m.published_at < cutoff)
    {
        Some(i) => from + i + 1,
        None => from,
    }
}

/// A join's [`RetainedView`] of the messages a broker holds: the retained
/// replay is [`retained`] of them at `now`.
#[derive(Debug)]
pub struct Held<'a> {
    /// The newest messages held, oldest first, without a gap.
    pub messages: &'a VecDeque<ChannelMessage>,
    /// The channel's settings.
    pub config: &'a ChannelConfig,
    /// When the view is taken (ms since the Unix epoch).
    pub now: i64,
}

impl RetainedView for Held<'_> {
    fn to_vec(&self) -> Vec<ChannelMessage> {
        retained(self.messages, self.config, self.now)
    }
}

/// The retained messages a new subscriber is shown: the newest
/// `message-retention` of the history.
pub fn retained(
    held: &VecDeque<ChannelMessage>,
    config: &ChannelConfig,
    now: i64,
) -> Vec<ChannelMessage> {
    let live = first_live(held, config, now);
    let from = held
        .len()
        .saturating_sub(config.message_retention)
        .max(live);
    held.iter().skip(from).cloned().collect()
}

/// Whether a subscriber whose last message is `want` can be sent exactly
/// what it missed: the stream is still in `want`'s epoch, it is at most
/// `max` messages behind, and the history still holds every message after
/// `want.offset`.
pub fn recover(
    position: &StreamPosition,
    want: &Position,
    max: usize,
    held: &VecDeque<ChannelMessage>,
    config: &ChannelConfig,
    now: i64,
) -> Recovery {
    // An offset past the stream's end is not of this stream.
    if want.epoch != *position.epoch || want.offset > position.offset {
        return Recovery::Missed(Reason::EpochChanged);
    }
    let missed = position.offset - want.offset;
    if missed == 0 {
        return Recovery::Recovered(Vec::new());
    }
    if missed > u64::try_from(max).unwrap_or(u64::MAX) {
        return Recovery::Missed(Reason::TooFarBehind);
    }
    let live = first_live(held, config, now);
    let after: Vec<ChannelMessage> = held
        .iter()
        .skip(live)
        .filter(|m| m.offset > want.offset)
        .cloned()
        .collect();
    // Held without a gap up to the position: all of them are there when
    // the count is right.
    if after.len() as u64 == missed && after.first().is_some_and(|m| m.offset == want.offset + 1) {
        Recovery::Recovered(after)
    } else {
        Recovery::Missed(Reason::TooFarBehind)
    }
}

/// A `history` query: without `since`, the newest `limit` messages; with
/// it, the first `limit` after it (`epoch-changed` when it is of another
/// epoch or past the stream's end, `too-far-behind` when the history no
/// longer holds the message right after it). Oldest first.
pub fn page(
    history: &History,
    since: Option<&Position>,
    limit: usize,
    now: i64,
) -> Result<Vec<ChannelMessage>, Reason> {
    let held = &history.messages;
    let live = first_live(held, &history.config, now);
    let position = &history.position;
    let Some(since) = since else {
        let from = held.len().saturating_sub(limit).max(live);
        return Ok(held.iter().skip(from).cloned().collect());
    };
    if since.epoch != *position.epoch || since.offset > position.offset {
        return Err(Reason::EpochChanged);
    }
    // The first offset the history still holds.
    let oldest = held.get(live).map_or(position.offset + 1, |m| m.offset);
    if oldest > since.offset + 1 {
        return Err(Reason::TooFarBehind);
    }
    Ok(held
        .iter()
        .skip(live)
        .filter(|m| m.offset > since.offset)
        .take(limit)
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sente_lite_protocol::Data;
    use std::sync::Arc;

    fn msg(offset: u64, published_at: i64) -> ChannelMessage {
        ChannelMessage {
            channel_id: "c".into(),
            message_id: format!("m{offset}"),
            data: Data::from(serde_json::json!(offset)),
            sender_conn_id: None,
            published_at,
            offset,
            epoch: "e".into(),
        }
    }

    /// Messages 3..=10 held, each published at its offset × 1000 ms.
    fn held() -> VecDeque<ChannelMessage> {
        (3..=10).map(|o| msg(o, o as i64 * 1000)).collect()
    }

    fn at(offset: u64, epoch: &str) -> Position {
        Position {
            offset,
            epoch: epoch.into(),
        }
    }

    fn position() -> StreamPosition {
        StreamPosition {
            offset: 10,
            epoch: Arc::from("e"),
        }
    }

    fn config(history_size: usize, history_ttl_ms: u64) -> ChannelConfig {
        ChannelConfig {
            message_retention: 2,
            history_size,
            history_ttl_ms,
            ..ChannelConfig::default()
        }
    }

    fn offsets(m: &[ChannelMessage]) -> Vec<u64> {
        m.iter().map(|m| m.offset).collect()
    }

    #[test]
    fn the_history_is_the_newest_by_count_and_then_by_age() {
        let h = held();
        assert_eq!(first_live(&h, &config(100, 0), 0), 0);
        assert_eq!(first_live(&h, &config(3, 0), 0), 5, "8, 9, 10");
        // history-size below message-retention: retention wins.
        assert_eq!(first_live(&h, &config(1, 0), 0), 6, "9, 10");
        // At 12 s with a 4 s ttl: published before 8 s are gone.
        assert_eq!(first_live(&h, &config(100, 4_000), 12_000), 5);
        assert_eq!(offsets(&retained(&h, &config(100, 0), 0)), [9, 10]);
        assert_eq!(offsets(&retained(&h, &config(100, 1_500), 11_000)), [10]);
    }

    #[test]
    fn recovery_is_all_or_nothing() {
        let h = held();
        let c = config(100, 0);
        let rec = |want: Position, max| recover(&position(), &want, max, &h, &c, 0);
        assert_eq!(rec(at(10, "e"), 5), Recovery::Recovered(Vec::new()));
        match rec(at(6, "e"), 5) {
            Recovery::Recovered(m) => assert_eq!(offsets(&m), [7, 8, 9, 10]),
            other => panic!("{other:?}"),
        }
        // Message 3 is held: from 2, everything is there.
        assert!(matches!(rec(at(2, "e"), 100), Recovery::Recovered(m) if m.len() == 8));
        // Message 2 is not.
        assert_eq!(rec(at(1, "e"), 100), Recovery::Missed(Reason::TooFarBehind));
        // More than max behind.
        assert_eq!(rec(at(6, "e"), 3), Recovery::Missed(Reason::TooFarBehind));
        assert_eq!(rec(at(6, "x"), 5), Recovery::Missed(Reason::EpochChanged));
        assert_eq!(rec(at(11, "e"), 5), Recovery::Missed(Reason::EpochChanged));
        // Expired messages are not recovered.
        let aged = recover(
            &position(),
            &at(6, "e"),
            100,
            &h,
            &config(100, 2_500),
            10_000,
        );
        assert_eq!(aged, Recovery::Missed(Reason::TooFarBehind));
        let fresh = recover(
            &position(),
            &at(7, "e"),
            100,
            &h,
            &config(100, 2_500),
            10_000,
        );
        assert!(matches!(fresh, Recovery::Recovered(m) if offsets(&m) == [8, 9, 10]));
    }

    #[test]
    fn pages_of_history() {
        let history = History {
            config: config(6, 0),
            position: position(),
            messages: held(),
        };
        let q = |since: Option<Position>, limit| page(&history, since.as_ref(), limit, 0);
        assert_eq!(offsets(&q(None, 100).unwrap()), [5, 6, 7, 8, 9, 10]);
        assert_eq!(offsets(&q(None, 2).unwrap()), [9, 10]);
        assert_eq!(offsets(&q(Some(at(5, "e")), 2).unwrap()), [6, 7]);
        assert_eq!(
            offsets(&q(Some(at(4, "e")), 100).unwrap()),
            [5, 6, 7, 8, 9, 10]
        );
        assert!(q(Some(at(10, "e")), 100).unwrap().is_empty());
        assert_eq!(q(Some(at(3, "e")), 100), Err(Reason::TooFarBehind));
        assert_eq!(q(Some(at(4, "x")), 100), Err(Reason::EpochChanged));
        assert_eq!(q(Some(at(12, "e")), 100), Err(Reason::EpochChanged));
        let empty = History {
            messages: VecDeque::new(),
            ..history.clone()
        };
        assert!(page(&empty, Some(&at(10, "e")), 5, 0).unwrap().is_empty());
        assert_eq!(
            page(&empty, Some(&at(9, "e")), 5, 0),
            Err(Reason::TooFarBehind)
        );
    }
}
