//! Where participants sit: a pure function from seat index to place, around a round table.
//!
//! Seats fill rings around the table, each ring holding as many seats as fit with
//! neighbours at least [`MIN_SPACING`] apart, so rings further out hold more.
//! A participant keeps their seat index while others come and go, so nobody jumps.

use std::f32::consts::TAU;

/// Radius of the table, in metres.
pub const TABLE_RADIUS: f32 = 1.6;
/// Distance from the table's edge to the first ring of seats.
pub const FIRST_RING_RADIUS: f32 = TABLE_RADIUS + 0.9;
/// Distance between rings.
pub const RING_STEP: f32 = 1.6;
/// Smallest distance between two seats' centres, in metres.
pub const MIN_SPACING: f32 = 1.5;

/// A seat: where its centre is on the floor (x, z) and the yaw that faces the table's centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seat {
    pub x: f32,
    pub z: f32,
    /// Rotation about +Y, radians, that turns +Z (a panel's front) towards the centre.
    pub yaw: f32,
}

/// Ring number, slot within the ring and the ring's capacity, for seat `index`.
fn ring_of(index: usize) -> (usize, usize, usize) {
    let mut ring = 0;
    let mut first = 0;
    loop {
        let radius = FIRST_RING_RADIUS + ring as f32 * RING_STEP;
        let capacity = seats_in_ring(radius);
        if index < first + capacity {
            return (ring, index - first, capacity);
        }
        first += capacity;
        ring += 1;
    }
}

/// How many seats fit on a ring of `radius` with [`MIN_SPACING`] between neighbours.
fn seats_in_ring(radius: f32) -> usize {
    // Chord between neighbours: 2 r sin(pi / n) >= MIN_SPACING.
    let half_angle = (MIN_SPACING / (2.0 * radius)).min(1.0).asin();
    ((std::f32::consts::PI / half_angle).floor() as usize).max(1)
}

/// Where in a ring of `capacity` the `nth` seat to fill is: the first at the near side (where
/// the local viewer sits), then across the table and outward from there, so people who join
/// sit where the viewer sees them.
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

/// How many seats the ring nearest the table holds (each gets a chair).
pub fn seats_in_first_ring() -> usize {
    seats_in_ring(FIRST_RING_RADIUS)
}

/// The place of seat `index`.
pub fn seat(index: usize) -> Seat {
    let (ring, nth, capacity) = ring_of(index);
    let slot = fill_order(nth, capacity);
    let radius = FIRST_RING_RADIUS + ring as f32 * RING_STEP;
    // Odd rings are turned by half a slot so their seats look between the ones in front.
    let offset = if ring % 2 == 1 { 0.5 } else { 0.0 };
    let angle = (slot as f32 + offset) / capacity as f32 * TAU;
    let x = radius * angle.sin();
    let z = radius * angle.cos();
    Seat {
        x,
        z,
        yaw: angle + std::f32::consts::PI,
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
                let d = ((a.x - b.x).powi(2) + (a.z - b.z).powi(2)).sqrt();
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
