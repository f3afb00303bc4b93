//! Where participants sit: a pure function from seat index to place, around a round table.
//!
//! Seats fill rings around the table, each ring holding as many seats as fit with
//! neighbours at least [`MIN_SPACING`] apart. Every client seats the room around its own
//! viewer (seat 0), so the order seats fill in is chosen for that view: first the seats of the
//! first ring across the table, then a raised gallery behind them (people there are seen
//! over the heads of the first ring), then the first ring's seats beside you, then the rest.
//! Twelve people are all in view from your seat, none hiding another.
//! A participant keeps their seat index while others come and go, so nobody jumps.

use std::f32::consts::{PI, TAU};

/// Radius of the table, in metres.
pub const TABLE_RADIUS: f32 = 1.6;
/// Distance from the table's edge to the first ring of seats.
pub const FIRST_RING_RADIUS: f32 = TABLE_RADIUS + 0.9;
/// Radius of the gallery: the second ring, on a step behind the first.
pub const GALLERY_RADIUS: f32 = 3.9;
/// How high the gallery's step is: enough for its people to be seen over the first ring.
pub const GALLERY_RISE: f32 = 0.7;
/// Distance between rings beyond the gallery.
pub const RING_STEP: f32 = 1.6;
/// Smallest distance between two seats' centres, in metres (in three dimensions: the
/// gallery is higher than the first ring).
pub const MIN_SPACING: f32 = 1.5;
/// Seats of the first ring across the table from yours, filled first: all in view.
const FRONT: usize = 5;
/// Gallery seats across the table, filled next: in view above the first ring.
const GALLERY_FRONT: usize = 6;

/// A seat: where its centre is on the floor (x, z), how high that floor is, and the yaw that
/// faces the table's centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seat {
    pub x: f32,
    pub z: f32,
    /// Height of the floor under the seat (the gallery's step), metres.
    pub floor: f32,
    /// Rotation about +Y, radians, that turns +Z (a panel's front) towards the centre.
    pub yaw: f32,
}

/// The gallery's step carries its own ring and the next one; further out is the floor.
pub const STEPPED_RINGS: std::ops::RangeInclusive<usize> = 1..=2;

fn ring_floor(ring: usize) -> f32 {
    if STEPPED_RINGS.contains(&ring) {
        GALLERY_RISE
    } else {
        0.0
    }
}

/// The radius of ring `ring`.
pub fn ring_radius(ring: usize) -> f32 {
    match ring {
        0 => FIRST_RING_RADIUS,
        _ => GALLERY_RADIUS + (ring - 1) as f32 * RING_STEP,
    }
}

/// How many seats fit on a ring of `radius` with [`MIN_SPACING`] between neighbours.
fn seats_in_ring(radius: f32) -> usize {
    // Chord between neighbours: 2 r sin(pi / n) >= MIN_SPACING.
    let half_angle = (MIN_SPACING / (2.0 * radius)).min(1.0).asin();
    ((PI / half_angle).floor() as usize).max(1)
}

/// The angle of `slot` in `ring` (0 is your side of the table). Odd rings are turned by half
/// a slot so their seats look between the ones in front.
fn slot_angle(ring: usize, slot: usize, capacity: usize) -> f32 {
    let offset = if ring % 2 == 1 { 0.5 } else { 0.0 };
    (slot as f32 + offset) / capacity as f32 * TAU
}

/// Where in the first ring (of `capacity`) the `nth` seat to fill is: yours at the near side,
/// then across the table and outward from there.
fn fill_order(nth: usize, capacity: usize) -> usize {
    if nth == 0 || capacity < 2 {
        return nth;
    }
    let across = capacity / 2;
    let step = nth.div_ceil(2);
    if nth % 2 == 1 {
        (across + capacity - (step - 1)) % capacity
    } else {
        (across + step) % capacity
    }
}

/// The `nth` slot to fill in another ring: nearest across the table first.
fn far_first(ring: usize, nth: usize, capacity: usize) -> usize {
    let mut slots: Vec<usize> = (0..capacity).collect();
    slots.sort_by(|a, b| {
        let from_across = |s: usize| (slot_angle(ring, s, capacity) - PI).abs();
        from_across(*a).total_cmp(&from_across(*b)).then(a.cmp(b))
    });
    slots[nth.min(capacity - 1)]
}

/// Ring, slot and the ring's capacity of seat `index`, in the order described above.
fn place_of(index: usize) -> (usize, usize, usize) {
    let first = seats_in_ring(ring_radius(0));
    let gallery = seats_in_ring(ring_radius(1));
    let front = FRONT.min(first - 1);
    let gallery_front = GALLERY_FRONT.min(gallery);
    if index <= front {
        return (0, fill_order(index, first), first);
    }
    let mut i = index - front - 1;
    if i < gallery_front {
        return (1, far_first(1, i, gallery), gallery);
    }
    i -= gallery_front;
    if i < first - 1 - front {
        return (0, fill_order(front + 1 + i, first), first);
    }
    i -= first - 1 - front;
    if i < gallery - gallery_front {
        return (1, far_first(1, gallery_front + i, gallery), gallery);
    }
    i -= gallery - gallery_front;
    let mut ring = 2;
    loop {
        let capacity = seats_in_ring(ring_radius(ring));
        if i < capacity {
            return (ring, far_first(ring, i, capacity), capacity);
        }
        i -= capacity;
        ring += 1;
    }
}

/// The seats that have a chair: the whole first ring and the gallery's seats across the table
/// (the seats twelve people fill).
pub fn seats_with_chairs() -> std::ops::Range<usize> {
    let first = seats_in_ring(ring_radius(0));
    0..first + GALLERY_FRONT.min(seats_in_ring(ring_radius(1)))
}

/// The place of seat `index`.
pub fn seat(index: usize) -> Seat {
    let (ring, slot, capacity) = place_of(index);
    let radius = ring_radius(ring);
    let angle = slot_angle(ring, slot, capacity);
    Seat {
        x: radius * angle.sin(),
        z: radius * angle.cos(),
        floor: ring_floor(ring),
        yaw: angle + PI,
    }
}

/// The lowest seat index not in `taken`.
pub fn first_free(taken: impl IntoIterator<Item = usize>) -> usize {
    let mut taken: Vec<usize> = taken.into_iter().collect();
    taken.sort_unstable();
    taken.dedup();
    taken
        .iter()
        .enumerate()
        .find(|(i, s)| *i != **s)
        .map_or(taken.len(), |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_two_of_the_first_hundred_seats_overlap() {
        let seats: Vec<Seat> = (0..100).map(seat).collect();
        for (i, a) in seats.iter().enumerate() {
            for b in &seats[i + 1..] {
                let d = ((a.x - b.x).powi(2) + (a.z - b.z).powi(2) + (a.floor - b.floor).powi(2)).sqrt();
                assert!(d >= MIN_SPACING - 1e-3, "{a:?} and {b:?} are {d} m apart");
            }
        }
    }

    #[test]
    fn seats_are_deterministic_and_clear_of_the_table() {
        for i in 0..50 {
            assert_eq!(seat(i), seat(i));
            let r = (seat(i).x.powi(2) + seat(i).z.powi(2)).sqrt();
            assert!(r > TABLE_RADIUS + 0.5, "seat {i} at {r} m is in the table");
        }
    }

    #[test]
    fn every_seat_faces_the_centre() {
        for i in 0..40 {
            let s = seat(i);
            // +Z turned by yaw about +Y is (sin yaw, cos yaw); it must point back at the origin.
            let (fx, fz) = (s.yaw.sin(), s.yaw.cos());
            let to_centre = (-s.x, -s.z);
            let len = (s.x * s.x + s.z * s.z).sqrt();
            let cos = (fx * to_centre.0 + fz * to_centre.1) / len;
            assert!(cos > 0.999, "seat {i} faces away ({cos})");
        }
    }

    #[test]
    fn every_seat_is_used_once_and_twelve_fill_the_front_and_the_gallery() {
        // The first three rings, every seat exactly once.
        let total: usize = (0..3).map(|r| seats_in_ring(ring_radius(r))).sum();
        let mut places: Vec<(usize, usize)> = (0..total).map(|i| (place_of(i).0, place_of(i).1)).collect();
        places.sort_unstable();
        places.dedup();
        assert_eq!(places.len(), total);
        // You, five across the table, six in the gallery behind them.
        let rings: Vec<usize> = (0..12).map(|i| place_of(i).0).collect();
        assert_eq!(rings, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
        for i in 1..12 {
            let s = seat(i);
            // Across the table from you: further than the table's centre.
            assert!(s.z < 0.5, "seat {i} at {s:?} is on your side");
        }
        assert!(seats_with_chairs().contains(&11) && !seats_with_chairs().contains(&(seats_with_chairs().end)));
    }

    #[test]
    fn each_ring_fills_every_slot_once_starting_across_the_table() {
        for capacity in 1..20 {
            let mut slots: Vec<usize> = (0..capacity).map(|n| fill_order(n, capacity)).collect();
            if capacity >= 2 {
                assert_eq!(slots[1], capacity / 2, "the second seat is across from the first");
            }
            slots.sort_unstable();
            assert_eq!(slots, (0..capacity).collect::<Vec<_>>(), "ring of {capacity}");
        }
    }

    #[test]
    fn free_seats_are_reused_so_others_stay_put() {
        assert_eq!(first_free([]), 0);
        assert_eq!(first_free([0, 1, 2]), 3);
        assert_eq!(first_free([0, 2, 3]), 1, "a leaver's seat is filled first");
        assert_eq!(first_free([1, 1, 0, 3]), 2);
    }
}
