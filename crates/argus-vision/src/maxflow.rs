//! Maximum flow / minimum s-t cut with Dinic's algorithm (BFS level graph, blocking flow with current-arc
//! pointers), iterative so that long augmenting paths on image grids cannot overflow the stack. Used by the
//! graph-cut segmenter; no maintained crate offers a min-cut fit for million-edge image graphs.

use std::collections::VecDeque;

/// A flow network with a source and a sink terminal, built node by node.
#[derive(Debug, Clone)]
pub struct FlowGraph {
    /// Per edge: head node. Edges come in pairs `e`, `e ^ 1` (each the other's residual).
    to: Vec<u32>,
    /// Per edge: residual capacity.
    cap: Vec<f32>,
    /// Per node: its edges.
    adj: Vec<Vec<u32>>,
    source: usize,
    sink: usize,
    /// Flow pushed directly through a node's two terminal links when both are set.
    direct: f64,
}

impl FlowGraph {
    /// A graph of `nodes` ordinary nodes (0..nodes) plus the two terminals.
    pub fn new(nodes: usize) -> Self {
        let mut adj = vec![Vec::new(); nodes + 2];
        for a in adj.iter_mut().take(nodes) {
            a.reserve(10);
        }
        Self { to: Vec::new(), cap: Vec::new(), adj, source: nodes, sink: nodes + 1, direct: 0.0 }
    }

    fn add_pair(&mut self, a: usize, b: usize, ab: f32, ba: f32) {
        let e = self.to.len() as u32;
        self.to.push(b as u32);
        self.cap.push(ab);
        self.to.push(a as u32);
        self.cap.push(ba);
        self.adj[a].push(e);
        self.adj[b].push(e + 1);
    }

    /// An edge between two ordinary nodes with capacity `ab` one way and `ba` the other.
    pub fn add_edge(&mut self, a: usize, b: usize, ab: f32, ba: f32) {
        if ab > 0.0 || ba > 0.0 {
            self.add_pair(a, b, ab, ba);
        }
    }

    /// Terminal links of a node: capacity from the source and to the sink. The common part is pushed at
    /// once (it is flow either way), so at most one link remains.
    pub fn add_terminal(&mut self, node: usize, from_source: f32, to_sink: f32) {
        let common = from_source.min(to_sink).max(0.0);
        self.direct += common as f64;
        let (s, t) = (from_source - common, to_sink - common);
        if s > 0.0 {
            self.add_pair(self.source, node, s, 0.0);
        }
        if t > 0.0 {
            self.add_pair(node, self.sink, t, 0.0);
        }
    }

    fn levels(&self) -> Option<Vec<i32>> {
        let mut level = vec![-1i32; self.adj.len()];
        level[self.source] = 0;
        let mut queue = VecDeque::from([self.source]);
        while let Some(v) = queue.pop_front() {
            for &e in &self.adj[v] {
                let w = self.to[e as usize] as usize;
                if level[w] < 0 && self.cap[e as usize] > 0.0 {
                    level[w] = level[v] + 1;
                    queue.push_back(w);
                }
            }
        }
        (level[self.sink] >= 0).then_some(level)
    }

    /// Runs the maximum flow; returns its value.
    pub fn solve(&mut self) -> f64 {
        let mut total = self.direct;
        while let Some(mut level) = self.levels() {
            let mut next = vec![0usize; self.adj.len()];
            let mut path: Vec<u32> = Vec::new();
            let mut v = self.source;
            loop {
                if v == self.sink {
                    let bottleneck = path.iter().map(|e| self.cap[*e as usize]).fold(f32::INFINITY, f32::min);
                    let mut first_saturated = path.len();
                    for (k, &e) in path.iter().enumerate() {
                        self.cap[e as usize] -= bottleneck;
                        self.cap[(e ^ 1) as usize] += bottleneck;
                        if first_saturated == path.len() && self.cap[e as usize] <= 0.0 {
                            first_saturated = k;
                        }
                    }
                    total += bottleneck as f64;
                    // Resume from the tail of the first saturated edge: the path before it is still usable.
                    let k = first_saturated.min(path.len().saturating_sub(1));
                    v = match path.get(k) {
                        Some(e) => self.to[(e ^ 1) as usize] as usize,
                        None => self.source,
                    };
                    path.truncate(k);
                    continue;
                }
                let mut advanced = false;
                while next[v] < self.adj[v].len() {
                    let e = self.adj[v][next[v]];
                    let w = self.to[e as usize] as usize;
                    if self.cap[e as usize] > 0.0 && level[w] == level[v] + 1 {
                        path.push(e);
                        v = w;
                        advanced = true;
                        break;
                    }
                    next[v] += 1;
                }
                if advanced {
                    continue;
                }
                // Dead end: retreat and never come back to this node in this phase.
                level[v] = -1;
                match path.pop() {
                    Some(e) => {
                        v = self.to[(e ^ 1) as usize] as usize;
                        next[v] += 1;
                    }
                    None => break,
                }
            }
        }
        total
    }

    /// After [`FlowGraph::solve`]: whether each ordinary node is on the source side of the minimum cut.
    pub fn source_side(&self) -> Vec<bool> {
        let mut seen = vec![false; self.adj.len()];
        seen[self.source] = true;
        let mut stack = vec![self.source];
        while let Some(v) = stack.pop() {
            for &e in &self.adj[v] {
                let w = self.to[e as usize] as usize;
                if !seen[w] && self.cap[e as usize] > 0.0 {
                    seen[w] = true;
                    stack.push(w);
                }
            }
        }
        seen.truncate(self.source);
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn matches_edmonds_karp_on_random_graphs() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..50 {
            let n = rng.gen_range(2..12);
            let mut g = FlowGraph::new(n);
            // Reference graph on nodes 0..n+2 with integer capacities.
            let mut caps: Vec<((usize, usize), i64)> = Vec::new();
            for _ in 0..rng.gen_range(1..30) {
                let (a, b) = (rng.gen_range(0..n), rng.gen_range(0..n));
                if a == b {
                    continue;
                }
                let (ab, ba) = (rng.gen_range(0..10), rng.gen_range(0..10));
                g.add_edge(a, b, ab as f32, ba as f32);
                caps.push(((a, b), ab));
                caps.push(((b, a), ba));
            }
            for v in 0..n {
                let (s, t) = (rng.gen_range(0..8), rng.gen_range(0..8));
                g.add_terminal(v, s as f32, t as f32);
                caps.push(((n, v), s));
                caps.push(((v, n + 1), t));
            }
            // Parallel edges add up.
            let mut summed: std::collections::BTreeMap<(usize, usize), i64> = std::collections::BTreeMap::new();
            for (k, c) in caps {
                *summed.entry(k).or_default() += c;
            }
            let vertices: Vec<usize> = (0..n + 2).collect();
            let (_, expected, _) = pathfinding::directed::edmonds_karp::edmonds_karp_sparse(
                &vertices,
                &n,
                &(n + 1),
                summed.into_iter().filter(|(_, c)| *c > 0),
            );
            let got = g.solve();
            assert!((got - expected as f64).abs() < 1e-6, "got {got}, expected {expected}");
        }
    }

    #[test]
    fn cut_separates_the_two_seeded_halves_of_a_chain() {
        // 0 - 1 - 2 - 3, weak link between 1 and 2.
        let mut g = FlowGraph::new(4);
        g.add_edge(0, 1, 10.0, 10.0);
        g.add_edge(1, 2, 1.0, 1.0);
        g.add_edge(2, 3, 10.0, 10.0);
        g.add_terminal(0, 100.0, 0.0);
        g.add_terminal(3, 0.0, 100.0);
        assert_eq!(g.solve(), 1.0);
        assert_eq!(g.source_side(), vec![true, true, false, false]);
    }
}
