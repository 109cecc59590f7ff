//! A workflow's graph laid out for an SVG the server draws (no script lays anything out).
//!
//! A layered ("Sugiyama") layout, hand-written because the graphs are small and the rules are
//! few: each node's rank is its longest path from a root (so every edge points down), an
//! edge that spans several ranks gets a virtual point on each rank between (so it bends
//! around the nodes and takes part in the ordering), and the order within each rank is
//! improved by barycenter sweeps (down then up, a few times, keeping the order with the
//! fewest crossings). Coordinates follow: ranks top to bottom, each rank centred.
//!
//! What this module is not: a renderer. [`Layout`] is plain numbers and strings; the
//! template `workflow_graph_partial.html` turns it into SVG, with one `<g class="node STATUS"
//! data-node=ID>` per node so that the live page only changes a class.

use std::collections::HashMap;

use cronium_model::workflow::EdgeKind;

/// Node box size and the gaps between boxes and ranks, in SVG user units (px).
pub const NODE_W: i64 = 168;
pub const NODE_H: i64 = 46;
const GAP_X: i64 = 28;
const GAP_Y: i64 = 64;
const MARGIN: i64 = 16;
/// The width a long edge's virtual point takes in a rank.
const VIRTUAL_W: i64 = 12;
/// Barycenter sweeps (each one down and one up).
const SWEEPS: usize = 4;
/// Labels longer than this are cut (the whole id is in the node's `<title>`).
const LABEL_MAX: usize = 20;

/// One node to lay out: its id and its incoming edges (`after`, in order).
pub struct GraphNode {
    pub id: String,
    pub after: Vec<(String, EdgeKind)>,
}

/// A laid-out node: its box's top-left corner, and its rank and place in the rank.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeBox {
    /// Index into the input.
    pub index: usize,
    pub id: String,
    /// The id as drawn (cut to [`LABEL_MAX`] characters).
    pub label: String,
    pub rank: usize,
    pub x: i64,
    pub y: i64,
    /// The centre of the box, for the labels.
    pub cx: i64,
    pub cy: i64,
}

/// A laid-out edge: an SVG path from the bottom of `from` to the top of `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeLine {
    pub from: String,
    pub to: String,
    pub kind: EdgeKind,
    /// The `d` attribute: cubic curves through the edge's virtual points.
    pub path: String,
    /// Where its label sits (just above the target's box).
    pub label_x: i64,
    pub label_y: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub width: i64,
    pub height: i64,
    pub nodes: Vec<NodeBox>,
    pub edges: Vec<EdgeLine>,
    /// Edge crossings left after the ordering (0 for a tree).
    pub crossings: usize,
}

/// Longest path from a root for each node. Edges are (from, to) indices; a node on a cycle
/// (never stored, but a page must not panic) keeps the rank it had reached.
fn ranks(count: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let order = match cronium_model::workflow::topological_order(count, edges) {
        Ok(o) => o,
        Err(_) => (0..count).collect(),
    };
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); count];
    for &(f, t) in edges {
        preds[t].push(f);
    }
    let mut rank = vec![0usize; count];
    let mut placed = vec![false; count];
    for n in order {
        rank[n] = preds[n]
            .iter()
            .filter(|p| placed[**p])
            .map(|p| rank[*p] + 1)
            .max()
            .unwrap_or(0);
        placed[n] = true;
    }
    rank
}

/// Crossings between two adjacent layers, given the segments (upper position, lower position).
fn crossings_between(segments: &[(usize, usize)]) -> usize {
    let mut n = 0;
    for (i, a) in segments.iter().enumerate() {
        for b in &segments[i + 1..] {
            if (a.0 < b.0 && a.1 > b.1) || (a.0 > b.0 && a.1 < b.1) {
                n += 1;
            }
        }
    }
    n
}

/// The layered graph: real nodes first, then virtual points; `layers[r]` in drawing order;
/// segments join points on adjacent ranks.
struct Layers {
    rank: Vec<usize>,
    layers: Vec<Vec<usize>>,
    /// (upper point, lower point)
    segments: Vec<(usize, usize)>,
}

impl Layers {
    fn position(&self) -> Vec<usize> {
        let mut pos = vec![0; self.rank.len()];
        for layer in &self.layers {
            for (i, &p) in layer.iter().enumerate() {
                pos[p] = i;
            }
        }
        pos
    }

    fn crossings(&self) -> usize {
        let pos = self.position();
        let mut by_rank: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
        for &(u, l) in &self.segments {
            by_rank
                .entry(self.rank[u])
                .or_default()
                .push((pos[u], pos[l]));
        }
        by_rank.values().map(|s| crossings_between(s)).sum()
    }

    /// Reorders each layer by the mean position of its neighbours in the layer above (`down`)
    /// or below; a point without such neighbours keeps its place.
    fn sweep(&mut self, down: bool) {
        let count = self.rank.len();
        let mut neighbours: Vec<Vec<usize>> = vec![Vec::new(); count];
        for &(u, l) in &self.segments {
            if down {
                neighbours[l].push(u);
            } else {
                neighbours[u].push(l);
            }
        }
        let ranks: Vec<usize> = if down {
            (1..self.layers.len()).collect()
        } else {
            (0..self.layers.len().saturating_sub(1)).rev().collect()
        };
        for r in ranks {
            let pos = self.position();
            let layer = &mut self.layers[r];
            let mut keyed: Vec<(f64, usize, usize)> = layer
                .iter()
                .enumerate()
                .map(|(i, &p)| {
                    let ns = &neighbours[p];
                    let key = if ns.is_empty() {
                        i as f64
                    } else {
                        ns.iter().map(|n| pos[*n] as f64).sum::<f64>() / ns.len() as f64
                    };
                    (key, i, p)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            *layer = keyed.into_iter().map(|(_, _, p)| p).collect();
        }
    }
}

/// Lays out `nodes` (in file order; unknown `after` ids are ignored).
pub fn layout(nodes: &[GraphNode]) -> Layout {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let edges: Vec<(usize, usize, EdgeKind)> = nodes
        .iter()
        .enumerate()
        .flat_map(|(to, n)| {
            n.after
                .iter()
                .filter_map(|(from, k)| index.get(from.as_str()).map(|&f| (f, to, *k)))
                .collect::<Vec<_>>()
        })
        .filter(|(f, t, _)| f != t)
        .collect();
    let plain: Vec<(usize, usize)> = edges.iter().map(|(f, t, _)| (*f, *t)).collect();
    let mut rank = ranks(nodes.len(), &plain);

    // Virtual points on the ranks an edge crosses; each edge is a chain of points.
    let mut chains: Vec<Vec<usize>> = Vec::with_capacity(edges.len());
    let mut segments = Vec::new();
    for &(f, t, _) in &edges {
        let mut chain = vec![f];
        let (rf, rt) = (rank[f], rank[t]);
        // An edge against the ranks (only on a cycle) is drawn straight.
        if rt > rf + 1 {
            for r in rf + 1..rt {
                rank.push(r);
                chain.push(rank.len() - 1);
            }
        }
        chain.push(t);
        for w in chain.windows(2) {
            if rank[w[0]] < rank[w[1]] {
                segments.push((w[0], w[1]));
            }
        }
        chains.push(chain);
    }
    let depth = rank.iter().copied().max().map_or(0, |m| m + 1);
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); depth];
    // File order first (real nodes), virtual points after their edge's source order.
    for (p, &r) in rank.iter().enumerate() {
        layers[r].push(p);
    }
    let mut g = Layers {
        rank,
        layers,
        segments,
    };
    let mut best = (g.crossings(), g.layers.clone());
    for _ in 0..SWEEPS {
        if best.0 == 0 {
            break;
        }
        g.sweep(true);
        let c = g.crossings();
        if c < best.0 {
            best = (c, g.layers.clone());
        }
        g.sweep(false);
        let c = g.crossings();
        if c < best.0 {
            best = (c, g.layers.clone());
        }
    }
    g.layers = best.1;

    // Coordinates: a virtual point takes a narrow slot, so long edges do not widen ranks.
    let real = nodes.len();
    let size = |p: usize| if p < real { NODE_W } else { VIRTUAL_W };
    let widths: Vec<i64> = g
        .layers
        .iter()
        .map(|l| l.iter().map(|&p| size(p)).sum::<i64>() + (l.len() as i64 - 1).max(0) * GAP_X)
        .collect();
    let inner = widths.iter().copied().max().unwrap_or(0).max(NODE_W);
    let width = inner + 2 * MARGIN;
    let mut centre_x = vec![0i64; g.rank.len()];
    for (layer, w) in g.layers.iter().zip(&widths) {
        let mut x = MARGIN + (inner - w) / 2;
        for &p in layer {
            centre_x[p] = x + size(p) / 2;
            x += size(p) + GAP_X;
        }
    }
    let top = |r: usize| MARGIN + r as i64 * (NODE_H + GAP_Y);
    let boxes: Vec<NodeBox> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let r = g.rank[i];
            let label = if n.id.chars().count() > LABEL_MAX {
                let cut: String = n.id.chars().take(LABEL_MAX - 1).collect();
                format!("{cut}…")
            } else {
                n.id.clone()
            };
            NodeBox {
                index: i,
                id: n.id.clone(),
                label,
                rank: r,
                x: centre_x[i] - NODE_W / 2,
                y: top(r),
                cx: centre_x[i],
                cy: top(r) + NODE_H / 2,
            }
        })
        .collect();
    // Ports: the edges into a box spread over its top in the order of where they come from,
    // the edges out of it over its bottom in the order of where they go, so that edges
    // sharing an end stay apart (and so do their labels).
    let mut in_port = vec![0i64; edges.len()];
    let mut out_port = vec![0i64; edges.len()];
    let spread = |ends: &mut Vec<(i64, usize)>, centre: i64, port: &mut Vec<i64>| {
        ends.sort();
        let k = ends.len() as i64;
        let span = (NODE_W * 3 / 5).min(k * 28);
        for (i, (_, e)) in ends.iter().enumerate() {
            port[*e] = if k == 1 {
                centre
            } else {
                centre - span / 2 + (2 * i as i64 + 1) * span / (2 * k)
            };
        }
    };
    for n in 0..real {
        let mut ins: Vec<(i64, usize)> = Vec::new();
        let mut outs: Vec<(i64, usize)> = Vec::new();
        for (e, chain) in chains.iter().enumerate() {
            if chain[chain.len() - 1] == n {
                ins.push((centre_x[chain[chain.len() - 2]], e));
            }
            if chain[0] == n {
                outs.push((centre_x[chain[1]], e));
            }
        }
        spread(&mut ins, centre_x[n], &mut in_port);
        spread(&mut outs, centre_x[n], &mut out_port);
    }
    let lines = edges
        .iter()
        .zip(&chains)
        .enumerate()
        .map(|(e, (&(f, t, kind), chain))| {
            // Points: the source's bottom port, each virtual point's rank (its middle), the
            // target's top port; joined by vertical-tangent cubic curves.
            let mut pts: Vec<(i64, i64)> = vec![(out_port[e], top(g.rank[f]) + NODE_H)];
            for &v in &chain[1..chain.len() - 1] {
                pts.push((centre_x[v], top(g.rank[v]) + NODE_H / 2));
            }
            let end = (in_port[e], top(g.rank[t]) - 2);
            pts.push(end);
            let mut d = format!("M{},{}", pts[0].0, pts[0].1);
            for w in pts.windows(2) {
                let ((x0, y0), (x1, y1)) = (w[0], w[1]);
                let my = (y0 + y1) / 2;
                d.push_str(&format!(" C{x0},{my} {x1},{my} {x1},{y1}"));
            }
            // The label sits on the middle of the last curve (where it crosses the gap).
            let (px, py) = pts[pts.len() - 2];
            EdgeLine {
                from: nodes[f].id.clone(),
                to: nodes[t].id.clone(),
                kind,
                path: d,
                label_x: (px + end.0) / 2,
                label_y: (py + end.1) / 2 + 4,
            }
        })
        .collect();
    Layout {
        width,
        height: top(depth.max(1)) - GAP_Y + MARGIN,
        nodes: boxes,
        edges: lines,
        crossings: best.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, after: &[(&str, EdgeKind)]) -> GraphNode {
        GraphNode {
            id: id.into(),
            after: after.iter().map(|(f, k)| (f.to_string(), *k)).collect(),
        }
    }

    fn by_id<'a>(l: &'a Layout, id: &str) -> &'a NodeBox {
        l.nodes.iter().find(|n| n.id == id).expect("node")
    }

    #[test]
    fn ranks_are_the_longest_path_from_a_root() {
        use EdgeKind::*;
        // a → b → c, and a → c directly: c is below b, not beside it.
        let l = layout(&[
            node("a", &[]),
            node("b", &[("a", Success)]),
            node("c", &[("a", Failure), ("b", Success)]),
            node("lone", &[]),
        ]);
        assert_eq!(by_id(&l, "a").rank, 0);
        assert_eq!(by_id(&l, "b").rank, 1);
        assert_eq!(by_id(&l, "c").rank, 2);
        assert_eq!(by_id(&l, "lone").rank, 0);
        assert!(by_id(&l, "c").y > by_id(&l, "b").y);
        // The long edge a → c bends through a virtual point, so it has two curves.
        let long = l
            .edges
            .iter()
            .find(|e| e.from == "a" && e.to == "c")
            .unwrap();
        assert_eq!(long.path.matches('C').count(), 2, "{}", long.path);
        assert_eq!(long.kind, Failure);
        assert_eq!(l.edges.len(), 3);
    }

    #[test]
    fn the_barycenter_pass_untangles_crossed_pairs() {
        use EdgeKind::*;
        // File order puts x2 under a1 and x1 under a2: every edge crosses without reordering.
        let l = layout(&[
            node("a1", &[]),
            node("a2", &[]),
            node("x2", &[("a2", Success)]),
            node("x1", &[("a1", Success)]),
            node("y2", &[("x2", Success)]),
            node("y1", &[("x1", Always)]),
        ]);
        assert_eq!(l.crossings, 0);
        assert!((by_id(&l, "a1").x < by_id(&l, "a2").x) == (by_id(&l, "x1").x < by_id(&l, "x2").x));
        assert!((by_id(&l, "x1").x < by_id(&l, "x2").x) == (by_id(&l, "y1").x < by_id(&l, "y2").x));
    }

    #[test]
    fn boxes_never_overlap_and_fit_the_canvas() {
        use EdgeKind::*;
        let mut nodes = vec![node("start", &[])];
        for i in 0..30 {
            nodes.push(node(&format!("branch-{i}"), &[("start", Success)]));
        }
        let after: Vec<(String, EdgeKind)> =
            (0..30).map(|i| (format!("branch-{i}"), Always)).collect();
        nodes.push(GraphNode {
            id: "a-join-with-a-very-long-name-indeed".into(),
            after,
        });
        let l = layout(&nodes);
        for (i, a) in l.nodes.iter().enumerate() {
            assert!(a.x >= 0 && a.x + NODE_W <= l.width && a.y + NODE_H <= l.height);
            for b in &l.nodes[i + 1..] {
                let apart = a.x + NODE_W <= b.x || b.x + NODE_W <= a.x || a.y != b.y;
                assert!(apart, "{} and {} overlap", a.id, b.id);
            }
        }
        let join = by_id(&l, "a-join-with-a-very-long-name-indeed");
        assert_eq!(join.rank, 2);
        assert!(join.label.ends_with('…') && join.label.chars().count() == LABEL_MAX);
        // The 30 edges into the join end at 30 different points of its top.
        let ends: std::collections::HashSet<&str> = l
            .edges
            .iter()
            .filter(|e| e.to == join.id)
            .filter_map(|e| e.path.rsplit(' ').next())
            .collect();
        assert_eq!(ends.len(), 30);
        assert_eq!(l.crossings, 0);
    }

    #[test]
    fn a_cycle_does_not_panic() {
        use EdgeKind::*;
        let l = layout(&[node("a", &[("b", Success)]), node("b", &[("a", Success)])]);
        assert_eq!(l.nodes.len(), 2);
    }
}
