//! Which agent may claim a job (PRODUCT.md "Agents"): the capability a job needs (from its
//! target) and the agent tags it asks for, and what a claimant brings (its tags and
//! capabilities). The store filters its claims by these; the API explains a queued job that no
//! connected agent can take with [`waiting_for`].

use crate::vocabulary;

vocabulary! {
    /// What a job's target needs of the agent that runs it.
    pub enum Capability ("capability") {
        /// A child process on the agent's machine (scripts with `target: local`, http events).
        Local = "local",
        /// A Docker engine the agent can use (`target: { container: ... }`).
        Container = "container",
        /// Deploying its runner over SSH (`target: { servers / tags: ... }`).
        Ssh = "ssh",
    }
}

/// What a job asks of the agent that claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    pub capability: Capability,
    /// All of these on the agent (empty: any agent).
    pub agent_tags: Vec<String>,
}

impl Default for Routing {
    /// A local job any agent takes.
    fn default() -> Self {
        Routing {
            capability: Capability::Local,
            agent_tags: Vec::new(),
        }
    }
}

/// What a claimant may take: a job whose capability it has and whose agent tags are all
/// among its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    pub tags: Vec<String>,
    pub capabilities: Vec<Capability>,
}

impl Claimant {
    /// Every capability and no tag: takes any job without `agent_tags` (what a claim was
    /// before routing, and the store's plain `claim`).
    pub fn untagged() -> Claimant {
        Claimant {
            tags: Vec::new(),
            capabilities: Capability::ALL.to_vec(),
        }
    }

    /// From a registration's words; unknown capabilities are left out (a newer agent's).
    pub fn from_registration(tags: &[String], capabilities: &[String]) -> Claimant {
        Claimant {
            tags: tags.to_vec(),
            capabilities: capabilities.iter().filter_map(|c| c.parse().ok()).collect(),
        }
    }

    /// Whether it may take a job needing `capability` (None: a job from before routing, which
    /// anyone takes) and `agent_tags`.
    pub fn can_take(&self, capability: Option<Capability>, agent_tags: &[String]) -> bool {
        capability.is_none_or(|c| self.capabilities.contains(&c))
            && agent_tags.iter().all(|t| self.tags.contains(t))
    }
}

/// Why a queued job needing `capability` and `agent_tags` waits, when none of `connected` can
/// take it: "an agent with tags gpu, eu (none connected)", "an agent that can run containers
/// (none connected)". None when one of them can.
pub fn waiting_for(
    capability: Option<Capability>,
    agent_tags: &[String],
    connected: &[Claimant],
) -> Option<String> {
    if connected.iter().any(|c| c.can_take(capability, agent_tags)) {
        return None;
    }
    let can = match capability {
        Some(Capability::Container) => Some("can run containers"),
        Some(Capability::Ssh) => Some("can run on servers over SSH"),
        Some(Capability::Local) | None => None,
    };
    let tags = (!agent_tags.is_empty()).then(|| {
        let word = if agent_tags.len() == 1 { "tag" } else { "tags" };
        format!("with {word} {}", agent_tags.join(", "))
    });
    let what = match (tags, can) {
        (Some(t), Some(c)) => format!("an agent {t} that {c}"),
        (Some(t), None) => format!("an agent {t}"),
        (None, Some(c)) => format!("an agent that {c}"),
        (None, None) => "an agent".to_string(),
    };
    Some(format!("{what} (none connected)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_claimant_takes_jobs_whose_tags_it_all_has_and_whose_capability_it_has() {
        let eu = Claimant {
            tags: tags(&["eu", "ssd"]),
            capabilities: vec![Capability::Local],
        };
        assert!(eu.can_take(Some(Capability::Local), &[]));
        assert!(eu.can_take(Some(Capability::Local), &tags(&["eu"])));
        assert!(eu.can_take(Some(Capability::Local), &tags(&["ssd", "eu"])));
        assert!(!eu.can_take(Some(Capability::Local), &tags(&["eu", "gpu"])));
        assert!(!eu.can_take(Some(Capability::Container), &[]));
        assert!(eu.can_take(None, &[]));
    }

    #[test]
    fn waiting_for_names_what_is_missing() {
        let local = Claimant {
            tags: Vec::new(),
            capabilities: vec![Capability::Local],
        };
        assert_eq!(
            waiting_for(
                Some(Capability::Local),
                &tags(&["gpu", "eu"]),
                std::slice::from_ref(&local)
            ),
            Some("an agent with tags gpu, eu (none connected)".into())
        );
        assert_eq!(
            waiting_for(
                Some(Capability::Container),
                &[],
                std::slice::from_ref(&local)
            ),
            Some("an agent that can run containers (none connected)".into())
        );
        assert_eq!(
            waiting_for(Some(Capability::Container), &tags(&["gpu"]), &[]),
            Some("an agent with tag gpu that can run containers (none connected)".into())
        );
        assert_eq!(
            waiting_for(Some(Capability::Local), &[], &[]),
            Some("an agent (none connected)".into())
        );
        assert_eq!(waiting_for(Some(Capability::Local), &[], &[local]), None);
    }
}
