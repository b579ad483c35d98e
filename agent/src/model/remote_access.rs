//! The estimated remote-access share of a workload, from where it runs and
//! where its memory is.

/// Estimated share of memory accesses that are remote: for each node n,
/// (share of on-CPU time on n) x (share of resident memory not on n). An
/// estimate: it assumes accesses spread evenly over resident memory.
pub fn estimated_remote_access(oncpu_by_node: &[f64], resident_by_node: &[u64]) -> Option<f64> {
    let cpu: f64 = oncpu_by_node.iter().sum();
    let mem: u64 = resident_by_node.iter().sum();
    if cpu <= 0.0 || mem == 0 {
        return None;
    }
    Some(
        oncpu_by_node
            .iter()
            .enumerate()
            .map(|(n, c)| {
                let here = resident_by_node.get(n).copied().unwrap_or(0);
                c / cpu * (mem - here) as f64 / mem as f64
            })
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_access_estimates() {
        // (cpu seconds by node, resident bytes by node, expected)
        let table: [(&[f64], &[u64], Option<f64>); 5] = [
            (&[1.0, 0.0], &[0, 100], Some(1.0)),   // runs on 0, memory on 1
            (&[1.0, 0.0], &[100, 0], Some(0.0)),   // all local
            (&[1.0, 1.0], &[100, 100], Some(0.5)), // spread evenly
            (&[3.0, 1.0], &[0, 100], Some(0.75)),
            (&[0.0, 0.0], &[0, 100], None), // never ran
        ];
        for (cpu, mem, want) in table {
            let got = estimated_remote_access(cpu, mem);
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{cpu:?} {mem:?}: {g}"),
                (g, w) => assert_eq!(g, w, "{cpu:?} {mem:?}"),
            }
        }
    }
}
