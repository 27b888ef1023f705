//! Scaling out: hosts split the projections between them by rendezvous hashing of the
//! projection name over N shards (changing N moves about 1/N of them), and any host
//! answers for any projection by forwarding to its owner. No coordination protocol: every
//! host reads the same config and modules and computes the same owner.

use serde::Deserialize;

/// `[cluster]`: which shard this host is, and where the others answer.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// `"I/N"`: this host is shard I of N (0-based). `"auto/N"` takes I from the
    /// hostname's trailing `-<ordinal>` (a Kubernetes StatefulSet pod). Empty: one host.
    pub shard: String,
    /// Base URLs of the shards' APIs, in shard order (`http://projector-0.projector:7070`);
    /// one entry holding `{i}` is a template expanded for every shard.
    pub peers: Vec<String>,
}

/// A host's place in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// This host's shard.
    pub index: usize,
    /// How many shards.
    pub count: usize,
    /// Each shard's API base URL (empty when unknown).
    pub peers: Vec<String>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            index: 0,
            count: 1,
            peers: Vec::new(),
        }
    }
}

/// A `shard` setting that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid [cluster] shard {0:?}: use \"I/N\" with 0 <= I < N (or \"auto/N\" on a StatefulSet pod named …-I){1}"
)]
pub struct BadShard(String, String);

impl Cluster {
    /// The cluster a config describes (`hostname` for `auto/N`).
    pub fn from_settings(s: &ClusterSettings, hostname: &str) -> Result<Cluster, BadShard> {
        if s.shard.trim().is_empty() {
            return Ok(Cluster::default());
        }
        let bad = |why: &str| BadShard(s.shard.clone(), why.to_string());
        let (i, n) = s.shard.split_once('/').ok_or_else(|| bad(""))?;
        let count: usize = n.trim().parse().map_err(|_| bad(""))?;
        let index: usize = if i.trim() == "auto" {
            hostname
                .rsplit_once('-')
                .and_then(|(_, o)| o.parse().ok())
                .ok_or_else(|| {
                    bad(&format!(
                        ": the hostname {hostname:?} ends in no -<ordinal>"
                    ))
                })?
        } else {
            i.trim().parse().map_err(|_| bad(""))?
        };
        if count == 0 || index >= count {
            return Err(bad(""));
        }
        let peers = match s.peers.as_slice() {
            [one] if one.contains("{i}") => (0..count)
                .map(|i| one.replace("{i}", &i.to_string()))
                .collect(),
            list => list.to_vec(),
        };
        if !peers.is_empty() && peers.len() != count {
            return Err(bad(&format!(": {} peers for {count} shards", peers.len())));
        }
        Ok(Cluster {
            index,
            count,
            peers,
        })
    }

    /// The shard that owns projection `name`: the highest score of (name, shard).
    pub fn owner(&self, name: &str) -> usize {
        (0..self.count).max_by_key(|&i| score(name, i)).unwrap_or(0)
    }

    /// True when this host runs projection `name`.
    pub fn owns(&self, name: &str) -> bool {
        self.owner(name) == self.index
    }

    /// The API base URL of shard `i`, if known.
    pub fn peer(&self, i: usize) -> Option<&str> {
        self.peers
            .get(i)
            .map(String::as_str)
            .filter(|p| !p.is_empty())
    }

    /// "shard I (URL)", for messages.
    pub fn describe(&self, i: usize) -> String {
        match self.peer(i) {
            Some(url) => format!("shard {i}/{} ({url})", self.count),
            None => format!("shard {i}/{}", self.count),
        }
    }
}

/// A stable 64-bit FNV-1a hash of the name and the shard (the same on every host and
/// every build, unlike std's hasher).
fn score(name: &str, shard: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain((shard as u64).to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Finish with a mix so shards' scores differ in their high bits too.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(shard: &str, peers: &[&str]) -> Cluster {
        let s = ClusterSettings {
            shard: shard.into(),
            peers: peers.iter().map(|p| p.to_string()).collect(),
        };
        Cluster::from_settings(&s, "projector-2").expect("valid")
    }

    #[test]
    fn every_projection_has_exactly_one_owner_and_few_move_when_n_grows() {
        let names: Vec<String> = (0..1000).map(|i| format!("projection-{i}")).collect();
        let three: Vec<Cluster> = (0..3).map(|i| cluster(&format!("{i}/3"), &[])).collect();
        for n in &names {
            assert_eq!(three.iter().filter(|c| c.owns(n)).count(), 1, "{n}");
        }
        let per_shard: Vec<usize> = (0..3)
            .map(|i| names.iter().filter(|n| three[0].owner(n) == i).count())
            .collect();
        assert!(
            per_shard.iter().all(|&c| c > 250),
            "balanced: {per_shard:?}"
        );
        let four = cluster("0/4", &[]);
        let moved = names
            .iter()
            .filter(|n| three[0].owner(n) != four.owner(n))
            .count();
        assert!(
            moved < 350,
            "going from 3 to 4 shards moves ~1/4, not {moved}"
        );
        assert!(
            names
                .iter()
                .all(|n| four.owner(n) == 3 || four.owner(n) == three[0].owner(n)),
            "a projection moves only to the new shard"
        );
    }

    #[test]
    fn shards_come_from_the_setting_or_the_pod_ordinal() {
        assert_eq!(cluster("", &[]), Cluster::default());
        assert_eq!(cluster("auto/3", &[]).index, 2, "projector-2");
        let c = cluster("1/3", &["http://projector-{i}.projector:7070"]);
        assert_eq!(c.peer(2), Some("http://projector-2.projector:7070"));
        for bad in ["3/3", "x/2", "1", "0/0"] {
            let s = ClusterSettings {
                shard: bad.into(),
                peers: vec![],
            };
            assert!(Cluster::from_settings(&s, "h").is_err(), "{bad}");
        }
        let s = ClusterSettings {
            shard: "0/2".into(),
            peers: vec!["http://a".into()],
        };
        assert!(
            Cluster::from_settings(&s, "h").is_err(),
            "one peer for two shards"
        );
    }
}
