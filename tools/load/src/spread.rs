//! Rooms spread over several nodes of a cluster (`--url` given more than once).
//!
//! Each room's participants are dealt round-robin over the `--url`s by their position
//! in the room: participant `g` (room `g % rooms`, position `g / rooms`) joins at
//! `--url` number `position % urls`. A URL given twice is one node that gets two shares
//! (`--url A,A,A,B` puts positions 0–2 of every room, the speakers with
//! `--speakers 3`, at A). Rejoined clients (churn) keep their slot's node: a client id
//! is its slot plus a multiple of the participant count.

/// Which node each participant slot joins at.
#[derive(Debug, Clone)]
pub struct Spread {
    /// The distinct URLs, in the order first given: the nodes.
    pub nodes: Vec<String>,
    /// For each `--url` given, the node it names.
    share: Vec<usize>,
    rooms: u32,
    participants: u32,
}

impl Spread {
    pub fn new(urls: &[String], rooms: u32, per_room: u32) -> Spread {
        let mut nodes: Vec<String> = Vec::new();
        let share = urls
            .iter()
            .map(|u| {
                nodes.iter().position(|n| n == u).unwrap_or_else(|| {
                    nodes.push(u.clone());
                    nodes.len() - 1
                })
            })
            .collect();
        Spread {
            nodes,
            share,
            rooms: rooms.max(1),
            participants: rooms.saturating_mul(per_room).max(1),
        }
    }

    /// More than one node: the rooms must span nodes.
    pub fn spans(&self) -> bool {
        self.nodes.len() > 1
    }

    /// The node (an index into [`Spread::nodes`]) of client `id`: a slot, or a
    /// rejoin's id (slot + k × participants).
    pub fn node_of(&self, id: u32) -> usize {
        let slot = id % self.participants;
        let position = (slot / self.rooms) as usize;
        self.share
            .get(position % self.share.len().max(1))
            .copied()
            .unwrap_or(0)
    }

    /// The id of slot `global`'s client after `rejoins` rejoins (churn): the same
    /// slot modulo the participant count, so it stays on its node.
    pub fn rejoin_id(&self, global: u32, rejoins: u32) -> u32 {
        global.wrapping_add(self.participants.wrapping_mul(rejoins))
    }

    /// The nodes holding members of `room`, each with how many.
    pub fn members_per_node(&self, room: u32) -> Vec<u32> {
        let mut n = vec![0; self.nodes.len()];
        let per_room = self.participants / self.rooms;
        for position in 0..per_room {
            if let Some(c) = n.get_mut(self.node_of(position * self.rooms + room)) {
                *c += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(s: &str) -> Vec<String> {
        s.split(',').map(str::to_owned).collect()
    }

    #[test]
    fn one_url_is_one_node() {
        let s = Spread::new(&urls("http://a:1"), 5, 10);
        assert!(!s.spans());
        assert!((0..50).all(|g| s.node_of(g) == 0));
        assert_eq!(s.members_per_node(3), vec![10]);
    }

    #[test]
    fn round_robin_by_position_in_the_room() {
        // 3 rooms of 4: participant g is in room g % 3 at position g / 3.
        let s = Spread::new(&urls("http://a:1,http://b:2"), 3, 4);
        assert!(s.spans());
        assert_eq!(s.nodes, urls("http://a:1,http://b:2"));
        let nodes: Vec<usize> = (0..12).map(|g| s.node_of(g)).collect();
        // Positions 0 and 2 at a, 1 and 3 at b, in every room.
        assert_eq!(nodes, [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1]);
        for room in 0..3 {
            assert_eq!(s.members_per_node(room), vec![2, 2]);
        }
        // A rejoin keeps its slot's node.
        assert_eq!(s.node_of(12 + 4), s.node_of(4));
        assert_eq!(s.node_of(5 * 12 + 7), s.node_of(7));
        assert_eq!(s.rejoin_id(7, 5), 5 * 12 + 7);
    }

    #[test]
    fn a_repeated_url_weights_its_node() {
        // Speakers (positions 0-2) at a, the other 7 of each room at b.
        let s = Spread::new(&urls("http://a:1,http://a:1,http://a:1,http://b:2,http://b:2,http://b:2,http://b:2,http://b:2,http://b:2,http://b:2"), 20, 10);
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(s.members_per_node(7), vec![3, 7]);
        assert!((0..3).all(|p| s.node_of(p * 20 + 7) == 0));
        assert!((3..10).all(|p| s.node_of(p * 20 + 7) == 1));
    }
}
