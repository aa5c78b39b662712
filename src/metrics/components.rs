//! Connected regions of a binary ground-truth mask, 8-connected, as
//! `skimage.measure.label` with its default full connectivity (and OpenCV's
//! `connectedComponents` default, which anomalib uses).
//!
//! A two-pass labelling with union-find: the only need is region membership
//! and area, on masks of ~256² pixels, and an image-processing crate
//! (imageproc pulls nalgebra, rand and font rendering) would be much heavier
//! than these forty lines.

/// Region labels of one mask: 0 for background, 1..=count for regions in
/// raster order of their first pixel (the numbering skimage gives).
#[derive(Debug, Clone, PartialEq)]
pub struct Regions {
    /// One label per pixel, row-major.
    pub labels: Vec<u32>,
    /// Pixel count of region `i + 1` at index `i`.
    pub areas: Vec<u32>,
}

/// Labels the 8-connected foreground regions of a `rows` x `cols` mask.
pub fn label8(mask: &[bool], rows: usize, cols: usize) -> Regions {
    debug_assert_eq!(mask.len(), rows * cols);
    let mut labels = vec![0u32; mask.len()];
    // parent[provisional label]; index 0 unused.
    let mut parent: Vec<u32> = vec![0];
    for r in 0..rows {
        for c in 0..cols {
            let i = r * cols + c;
            if !mask[i] {
                continue;
            }
            // Already-visited neighbours: W, NW, N, NE.
            let mut found = 0u32;
            let mut link = |l: u32, parent: &mut Vec<u32>| {
                if l == 0 {
                    return;
                }
                if found == 0 {
                    found = l;
                } else {
                    union(parent, found, l);
                }
            };
            if c > 0 {
                link(labels[i - 1], &mut parent);
            }
            if r > 0 {
                let up = i - cols;
                if c > 0 {
                    link(labels[up - 1], &mut parent);
                }
                link(labels[up], &mut parent);
                if c + 1 < cols {
                    link(labels[up + 1], &mut parent);
                }
            }
            if found == 0 {
                found = parent.len() as u32;
                parent.push(found);
            }
            labels[i] = found;
        }
    }
    // Final labels numbered by first appearance in raster order.
    let mut final_of = vec![0u32; parent.len()];
    let mut areas: Vec<u32> = Vec::new();
    for l in labels.iter_mut() {
        if *l == 0 {
            continue;
        }
        let root = find(&mut parent, *l) as usize;
        if final_of[root] == 0 {
            areas.push(0);
            final_of[root] = areas.len() as u32;
        }
        *l = final_of[root];
        areas[*l as usize - 1] += 1;
    }
    Regions { labels, areas }
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        // Path halving.
        let grand = parent[parent[x as usize] as usize];
        parent[x as usize] = grand;
        x = grand;
    }
    x
}

fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        // Keep the smaller (earlier) label as the root.
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi as usize] = lo;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(rows: &[&str]) -> (Vec<bool>, usize, usize) {
        let cols = rows[0].len();
        let mask = rows.iter().flat_map(|r| r.chars().map(|c| c == '#')).collect();
        (mask, rows.len(), cols)
    }

    #[test]
    fn diagonal_touch_joins_regions() {
        let (m, r, c) = parse(&["#..", ".#.", "..#"]);
        let reg = label8(&m, r, c);
        assert_eq!(reg.areas, vec![3]);
    }

    #[test]
    fn separate_regions_numbered_in_raster_order() {
        let (m, r, c) = parse(&["#.#", "#..", "..#"]);
        let reg = label8(&m, r, c);
        assert_eq!(reg.areas, vec![2, 1, 1]);
        assert_eq!(reg.labels, vec![1, 0, 2, 1, 0, 0, 0, 0, 3]);
    }

    #[test]
    fn u_shape_merges_late() {
        // Two arms that meet only on the last row; then an anti-diagonal join.
        let (m, r, c) = parse(&["#.#.", "#.#.", "###.", "...#"]);
        let reg = label8(&m, r, c);
        assert_eq!(reg.areas, vec![8]);
        let (m, r, c) = parse(&["..#", ".#.", "#.."]);
        assert_eq!(label8(&m, r, c).areas, vec![3]);
    }

    #[test]
    fn empty_and_full() {
        let reg = label8(&[false; 6], 2, 3);
        assert!(reg.areas.is_empty());
        let reg = label8(&[true; 6], 2, 3);
        assert_eq!(reg.areas, vec![6]);
    }
}
