//! File reservations on NATS (DESIGN.md §12, docs/nats.md): one key per project in
//! `relay_ep`, `resv.<project>` ([`resv_key`]), whose value is the project's whole list of
//! reservations as JSON. Every change — reserve, renew, release, gc — is one
//! compare-and-set on that key's revision, so two holders racing for overlapping paths
//! are serialised by the server: the loser re-reads, sees the winner, and is refused.
//! Expired entries are dropped whenever the key is written. A list emptied by release is
//! written empty (not deleted), so a key is only ever updated by revision.

use super::*;
use crate::store::overlap::Decider;
use crate::store::{Conflict, Mode, Reservation, ReservationSelect, ReserveRequest, Reserved};

/// The value of a project's key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Doc {
    /// The project directory (the key may be a hash of it).
    project: String,
    /// Its reservations, live or lapsed since the last write, by `created_at` then id.
    reservations: Vec<Reservation>,
    /// Random per write: tells "my write landed but its answer was lost" from a rival's.
    #[serde(default)]
    token: u64,
}

/// Whether `r` is selected by `sel` (the project is checked by the caller).
fn selected(sel: &ReservationSelect, r: &Reservation) -> bool {
    sel.holder.as_ref().is_none_or(|h| r.holder == *h)
        && sel.globs.as_ref().is_none_or(|g| g.contains(&r.glob))
}

/// The order [`crate::store::Store::reservations`] promises: project, `created_at`, id.
fn sort(r: &mut [Reservation]) {
    r.sort_by(|a, b| (&a.project, a.created_at, &a.id).cmp(&(&b.project, b.created_at, &b.id)));
}

/// A project's list as stored: entries of another project (not relay's writing) dropped.
fn parse_doc(project: &str, payload: &[u8]) -> Doc {
    match serde_json::from_slice::<Doc>(payload) {
        Ok(mut d) if d.project == project => {
            d.reservations.retain(|r| r.project == project);
            d
        }
        Ok(d) => {
            tracing::warn!(
                project,
                found = d.project,
                "reservations key holds another project's list; taken as empty"
            );
            Doc::default()
        }
        Err(e) => {
            // Not relay's writing: the next change overwrites it by CAS.
            tracing::warn!(project, "unreadable reservations ({e}); taken as empty");
            Doc::default()
        }
    }
}

impl Inner {
    /// A project's reservations as the leader has them, with the key's revision.
    async fn resv_doc(&self, project: &str) -> Result<(Vec<Reservation>, Option<u64>)> {
        let subject = format!("$KV.{EP_BUCKET}.{}", resv_key(project));
        Ok(
            match self
                .kv_now(&self.ep_stream, &subject, "reservations")
                .await?
            {
                Some((payload, rev)) => (parse_doc(project, &payload).reservations, Some(rev)),
                None => (Vec::new(), None),
            },
        )
    }

    /// Changes a project's list by `f` (given the stored list and now; it returns its
    /// answer and whether to write), as one compare-and-set, re-reading and running `f`
    /// again when another writer got there first.
    async fn resv_change<T>(
        &self,
        project: &str,
        mut f: impl FnMut(&mut Vec<Reservation>, i64) -> (T, bool),
    ) -> Result<T> {
        let key = resv_key(project);
        for _ in 0..CAS_ATTEMPTS {
            let (mut list, rev) = self.resv_doc(project).await?;
            // What this write replaces (CAS: the previous revision), for its events.
            let before = list.clone();
            let now = now_ms();
            let (answer, write) = f(&mut list, now);
            if !write {
                return Ok(answer);
            }
            list.retain(|r| r.expires_at > now);
            sort(&mut list);
            // Its events, after any the revision it replaces must pass on (ops/events.rs).
            let mut recs = self.carried(&key, rev).await?;
            recs.extend(super::events::resv_recs(&before, &list, now));
            let headers = super::events::ev_headers(&recs);
            let doc = Doc {
                project: project.to_string(),
                reservations: list,
                token: token(),
            };
            let val = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
            // One key holds the whole list; past the server's payload limit (less room for
            // the KV headers) no retry helps.
            let room = self.client.server_info().max_payload.saturating_sub(1024);
            // The events header travels in the same message.
            let header_len = if recs.is_empty() {
                0
            } else {
                enc(&serde_json::to_string(&recs).unwrap_or_default()).len()
            };
            if val.len() + header_len > room {
                return Err(self.err(format!(
                    "the {} reservations of {project} take {} bytes, more than one NATS \
                     message holds here ({room} bytes); release some (relay release) first",
                    doc.reservations.len(),
                    val.len(),
                )));
            }
            let retried = std::sync::atomic::AtomicBool::new(false);
            let cas = self
                .retrying(
                    &format!("writing the reservations of {project}"),
                    || async {
                        // The write carries its events (ops/events.rs).
                        let a = match &headers {
                            Some(h) => {
                                self.ep_attempt(&key, &val, &super::events::EpWrite::Cas(rev), h)
                                    .await
                            }
                            None => cas_write(&self.eps, &key, &val, rev).await,
                        };
                        if matches!(a, Attempt::Again(_)) {
                            retried.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        a
                    },
                )
                .await?;
            match cas {
                Cas::Done => return Ok(answer),
                Cas::Conflict if retried.load(std::sync::atomic::Ordering::Relaxed) => {
                    // Our earlier attempt may have landed with only its answer lost.
                    let subject = format!("$KV.{EP_BUCKET}.{key}");
                    if let Some((payload, _)) = self
                        .kv_now(&self.ep_stream, &subject, "reservations")
                        .await?
                        && serde_json::from_slice::<Doc>(&payload)
                            .is_ok_and(|d| d.token == doc.token)
                    {
                        return Ok(answer);
                    }
                }
                Cas::Conflict => {}
            }
        }
        Err(self.err(format!(
            "reservations of {project}: {CAS_ATTEMPTS} compare-and-set attempts lost to other writers"
        )))
    }

    /// Every project that has a reservations key (from any replica: a listing).
    async fn resv_projects(&self) -> Result<Vec<(String, Vec<Reservation>)>> {
        let raws = self.scan(&format!("KV_{EP_BUCKET}"), &resv_all()).await?;
        let mut out = Vec::new();
        for r in raws.into_iter().filter(|r| !r.is_kv_delete()) {
            let Ok(doc) = serde_json::from_slice::<Doc>(&r.payload) else {
                tracing::warn!(subject = r.subject, "unreadable reservations; skipped");
                continue;
            };
            // A key that is not the one its project maps to was not written by relay.
            if key_of(EP_BUCKET, &r.subject) != Some(resv_key(&doc.project).as_str()) {
                tracing::warn!(
                    subject = r.subject,
                    project = doc.project,
                    "reservations under another project's key; skipped"
                );
                continue;
            }
            let project = doc.project.clone();
            let list = parse_doc(&project, &r.payload).reservations;
            out.push((project, list));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The projects `sel` may touch: its own, or every one with a key.
    async fn resv_targets(&self, sel: &ReservationSelect) -> Result<Vec<String>> {
        Ok(match &sel.project {
            Some(p) => vec![p.clone()],
            None => self
                .resv_projects()
                .await?
                .into_iter()
                .map(|(p, _)| p)
                .collect(),
        })
    }

    pub async fn reserve(&self, req: &ReserveRequest) -> Result<Reserved> {
        let Some((holder, _)) = self.ep_now(&req.holder).await? else {
            return Err(Error::UnknownEndpoint {
                query: req.holder.clone(),
            });
        };
        let holder = self.reconciled(holder).await?;
        let globs = req.globs_once();
        // One work budget for the whole request, its decisions kept across CAS retries
        // (an overlap depends only on the two globs), as the SQLite store does.
        let mut decider = Decider::new(&globs);
        self.resv_change(&req.project, |list, now| {
            list.retain(|r| r.expires_at > now);
            let others: Vec<&Reservation> = list
                .iter()
                .filter(|r| r.holder != holder.id)
                .filter(|r| r.mode == Mode::Exclusive || req.mode == Mode::Exclusive)
                .collect();
            let mut conflicts = Vec::new();
            for (i, want) in globs.iter().enumerate() {
                for held in &others {
                    if decider.decide(i, &held.glob).conflicts() {
                        conflicts.push(Conflict {
                            glob: want.to_string(),
                            held: (*held).clone(),
                        });
                    }
                }
            }
            if !conflicts.is_empty() && !req.force {
                let refused = Reserved {
                    granted: Vec::new(),
                    conflicts,
                };
                return (refused, false);
            }
            let mut granted = Vec::with_capacity(globs.len());
            for glob in &globs {
                let forced = req.force && conflicts.iter().any(|c| c.glob == *glob);
                let at = list
                    .iter()
                    .position(|r| r.holder == holder.id && r.glob == *glob);
                let r = req.grant(at.map(|k| &list[k]), &holder, &self.host, glob, now, forced);
                match at {
                    Some(k) => list[k] = r.clone(),
                    None => list.push(r.clone()),
                }
                granted.push(r);
            }
            (Reserved { granted, conflicts }, true)
        })
        .await
    }

    pub async fn renew_reservations(
        &self,
        sel: &ReservationSelect,
        ttl: Duration,
    ) -> Result<Vec<Reservation>> {
        let mut out = Vec::new();
        for project in self.resv_targets(sel).await? {
            let renewed = self
                .resv_change(&project, |list, now| {
                    let expires_at = crate::store::coordination::lapse_at(now, ttl);
                    let mut renewed = Vec::new();
                    for r in list.iter_mut() {
                        if r.expires_at > now && selected(sel, r) {
                            r.expires_at = expires_at;
                            renewed.push(r.clone());
                        }
                    }
                    let write = !renewed.is_empty();
                    (renewed, write)
                })
                .await?;
            out.extend(renewed);
        }
        sort(&mut out);
        Ok(out)
    }

    pub async fn release_reservations(&self, sel: &ReservationSelect) -> Result<Vec<Reservation>> {
        let mut out = Vec::new();
        for project in self.resv_targets(sel).await? {
            let released = self
                .resv_change(&project, |list, now| {
                    let before = list.len();
                    let mut live = Vec::new();
                    list.retain(|r| {
                        if !selected(sel, r) {
                            return true;
                        }
                        if r.expires_at > now {
                            live.push(r.clone());
                        }
                        false
                    });
                    let write = list.len() != before;
                    (live, write)
                })
                .await?;
            out.extend(released);
        }
        sort(&mut out);
        Ok(out)
    }

    pub async fn reservations(&self, project: Option<&str>) -> Result<Vec<Reservation>> {
        let now = now_ms();
        let mut out: Vec<Reservation> = match project {
            Some(p) => self.resv_doc(p).await?.0,
            None => self
                .resv_projects()
                .await?
                .into_iter()
                .flat_map(|(_, l)| l)
                .collect(),
        };
        out.retain(|r| r.expires_at > now);
        sort(&mut out);
        Ok(out)
    }

    /// Drops the expired reservations of every project; how many were dropped.
    pub async fn gc_reservations(&self) -> Result<u64> {
        let now = now_ms();
        let mut n = 0;
        for (project, list) in self.resv_projects().await? {
            if list.iter().all(|r| r.expires_at > now) {
                continue;
            }
            n += self
                .resv_change(&project, |list, now| {
                    let expired = list.iter().filter(|r| r.expires_at <= now).count() as u64;
                    (expired, expired > 0)
                })
                .await?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::nats::NatsStore;
    use crate::store::{Registration, Store};

    fn rq(project: &str, holder: &str, glob: &str, ttl: Duration) -> ReserveRequest {
        ReserveRequest {
            project: project.into(),
            holder: holder.into(),
            globs: vec![glob.into()],
            mode: Mode::Exclusive,
            ttl,
            reason: None,
            force: false,
        }
    }

    /// Long project paths (hashed keys), several projects, a key holding garbage, expiry
    /// and gc: what the conformance suite cannot reach from outside.
    #[test]
    fn projects_keys_garbage_and_gc() {
        if crate::natsd::skip_or_fail("NATS reservations") {
            return;
        }
        let cluster = crate::natsd::Cluster::start(1, Duration::from_secs(120)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let s = NatsStore::open(&cluster.urls(), &Config::at(dir.path().join("home"))).unwrap();
        let h = s
            .register(&Registration {
                name: Some("h".into()),
                ..Default::default()
            })
            .unwrap()
            .endpoint
            .id;
        let long = format!("/w/{}", "deep/".repeat(80));
        assert!(resv_key(&long).starts_with("resv.h."));
        let hour = Duration::from_secs(3600);
        for p in [long.as_str(), "/w/a", "/w/b.c"] {
            let r = s.reserve(&rq(p, &h, "src/**", hour)).unwrap();
            assert_eq!(r.granted.len(), 1, "{p}");
        }
        let all = s.reservations(None).unwrap();
        let projects: Vec<&str> = all.iter().map(|r| r.project.as_str()).collect();
        let mut sorted = projects.clone();
        sorted.sort();
        assert_eq!(projects, sorted);
        assert_eq!(projects.len(), 3);
        assert!(projects.contains(&long.as_str()));

        // Garbage under a project's key reads as no reservations; the next reserve
        // overwrites it by CAS.
        s.run(|i| async move {
            i.eps
                .put(resv_key("/w/a"), Bytes::from_static(b"{not json"))
                .await
                .map_err(|e| i.err(e.to_string()))?;
            Ok(())
        })
        .unwrap();
        assert!(s.reservations(Some("/w/a")).unwrap().is_empty());
        assert_eq!(s.reservations(None).unwrap().len(), 2);
        let r = s.reserve(&rq("/w/a", &h, "docs/*", hour)).unwrap();
        assert_eq!(r.granted.len(), 1);
        assert_eq!(s.reservations(Some("/w/a")).unwrap().len(), 1);

        // A reservation that lapsed is gone from listings at once and from the key at gc.
        let lapsing = s
            .reserve(&rq("/w/b.c", &h, "tests/**", Duration::from_millis(1)))
            .unwrap()
            .granted
            .remove(0);
        // Waits for the clock to pass its expiry (1 ms), not for anything to settle.
        while now_ms() <= lapsing.expires_at {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(s.reservations(Some("/w/b.c")).unwrap().len(), 1);
        assert_eq!(
            s.gc(Duration::from_secs(86_400))
                .unwrap()
                .reservations_deleted,
            1
        );
        assert_eq!(
            s.gc(Duration::from_secs(86_400))
                .unwrap()
                .reservations_deleted,
            0
        );
        let released = s
            .release_reservations(&ReservationSelect {
                holder: Some(h.clone()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(released.len(), 3);
        assert!(s.reservations(None).unwrap().is_empty());
    }
}
