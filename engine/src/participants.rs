//! The participants whose media a shard holds, in a slab: the forwarding path reaches
//! each subscriber by its index ([`Key`], kept in the room's view), never by hashing
//! its id. Entries are boxed: a `Participant` (its str0m `Rtc`) is ~10 KB, and a
//! growing table of them inline would move and waste that much per spare slot.

use std::collections::HashMap;

use chorus_protocol::signal::ParticipantId;

use crate::participant::Participant;

/// Where a participant sits in its shard's slab; stable while it stays on the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key(u32);

impl Key {
    #[cfg(test)]
    pub fn for_test(i: u32) -> Key {
        Key(i)
    }
}

#[derive(Default)]
pub(crate) struct Participants {
    slots: Vec<Option<Box<Participant>>>,
    /// Per slot, whether the shard's video tick must visit its participant: it
    /// negotiated video ([`Participant::video_negotiated`]) or is owed its slot map
    /// (`video_dirty`). The tick finds them in this dense list instead of
    /// dereferencing every boxed entry (at idle, 2,500 participants a shard, 20 times
    /// a second).
    video: Vec<bool>,
    /// Indices of empty slots, reused first.
    free: Vec<u32>,
    by_id: HashMap<ParticipantId, Key>,
}

impl Participants {
    /// The participants the video tick visits (video negotiated, or a slot map
    /// owed), in no particular order. The list may still hold one whose map went out
    /// since; it is passed over here and leaves the list at the tick's end.
    pub fn with_video_mut(&mut self) -> impl Iterator<Item = &mut Participant> {
        self.slots
            .iter_mut()
            .zip(&self.video)
            .filter(|(_, video)| **video)
            .filter_map(|(s, _)| s.as_deref_mut())
            .filter(|p| visits(p))
    }

    /// `id`'s video state changed (an offer, a slot map owed): the tick visits it
    /// while it has video or is owed a map.
    pub fn video_changed(&mut self, id: &ParticipantId) {
        if let Some(key) = self.by_id.get(id).copied() {
            self.video_changed_at(key);
        }
    }

    /// [`Participants::video_changed`] by key.
    pub fn video_changed_at(&mut self, Key(i): Key) {
        let visit = self
            .slots
            .get(i as usize)
            .and_then(|s| s.as_deref())
            .is_some_and(visits);
        if let Some(flag) = self.video.get_mut(i as usize) {
            *flag = visit;
        }
    }

    /// After the tick: those it visited that neither have video nor are owed a map
    /// any more leave the list.
    pub fn forget_without_video(&mut self) {
        for (slot, flag) in self.slots.iter().zip(self.video.iter_mut()) {
            if *flag && !slot.as_deref().is_some_and(visits) {
                *flag = false;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn contains_key(&self, id: &ParticipantId) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn get(&self, id: &ParticipantId) -> Option<&Participant> {
        let Key(i) = *self.by_id.get(id)?;
        self.slots.get(i as usize)?.as_deref()
    }

    pub fn get_mut(&mut self, id: &ParticipantId) -> Option<&mut Participant> {
        let Key(i) = *self.by_id.get(id)?;
        self.slots.get_mut(i as usize)?.as_deref_mut()
    }

    /// Where a participant on this shard sits.
    pub fn key(&self, id: &ParticipantId) -> Option<Key> {
        self.by_id.get(id).copied()
    }

    /// The participant at `key` (the forwarding path's lookup).
    pub fn at_mut(&mut self, key: Key) -> Option<&mut Participant> {
        self.slots.get_mut(key.0 as usize)?.as_deref_mut()
    }

    /// Adds a participant (replacing one with the same id) and returns its key.
    pub fn insert(&mut self, p: Participant) -> Key {
        let id = p.id;
        let video = visits(&p);
        if let Some(key) = self.by_id.get(&id).copied() {
            if let Some(slot) = self.slots.get_mut(key.0 as usize) {
                *slot = Some(Box::new(p));
                self.video[key.0 as usize] = video;
                return key;
            }
        }
        let key = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(Box::new(p));
                self.video[i as usize] = video;
                Key(i)
            }
            None => {
                self.slots.push(Some(Box::new(p)));
                self.video.push(video);
                Key((self.slots.len() - 1) as u32)
            }
        };
        self.by_id.insert(id, key);
        key
    }

    pub fn remove(&mut self, id: &ParticipantId) -> Option<Participant> {
        let key = self.by_id.remove(id)?;
        let p = self.slots.get_mut(key.0 as usize)?.take()?;
        self.video[key.0 as usize] = false;
        self.free.push(key.0);
        Some(*p)
    }
}

/// Whether the shard's video tick must visit `p`.
fn visits(p: &Participant) -> bool {
    p.video_negotiated || p.video_dirty
}
