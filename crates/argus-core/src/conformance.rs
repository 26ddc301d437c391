//! The store conformance suite: what every [`MetadataStore`] + [`JobQueue`] backend must do, as checks that
//! panic with a message. A backend runs it from its tests with a factory of fresh, empty stores
//! ([`run`]); the SQLite store runs it in the test command, a PostgreSQL store will run the same checks.
//!
//! Compiled only with the `conformance` feature (a dev-dependency of the backends), never into the server.

use std::collections::HashSet;
use std::future::Future;

use chrono::Utc;
use uuid::Uuid;

use crate::jobs::{Claimed, JobQueue, JobStatus, NewJob};
use crate::model::{BoundingBox, Iteration, IterationStatus, PolygonPoint, Project, ProjectSettings, TagType};
use crate::store::{
    DeletedImages, ImageQuery, InsertOutcome, MetadataStore, NewImage, NewRegion, StoreError, TagRecord, TaggingStatus,
};

/// Runs every check, each on a fresh store from `fresh`.
pub async fn run<S, F, Fut>(fresh: F)
where
    S: MetadataStore + JobQueue,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    secrets_are_stored_once(&fresh().await).await;
    a_lease_has_one_holder_until_it_lapses(&fresh().await).await;
    projects_round_trip(&fresh().await).await;
    tags_are_unique_by_name_per_project_and_by_id_everywhere(&fresh().await).await;
    images_deduplicate_respect_the_quota_and_carry_labels(&fresh().await).await;
    concurrent_batches_into_one_project_dedupe_and_keep_the_quota(&fresh().await).await;
    deleting_a_project_removes_what_it_owns(&fresh().await).await;
    an_iteration_is_created_with_its_job(&fresh().await).await;
    two_trainings_started_together_make_one(&fresh().await).await;
    a_trained_iteration_is_imported_without_a_job(&fresh().await).await;
    jobs_are_claimed_once_and_survive_dead_workers(&fresh().await).await;
    failed_attempts_retry_then_complete(&fresh().await).await;
}

async fn a_lease_has_one_holder_until_it_lapses(store: &impl MetadataStore) {
    assert!(store.try_lease("sweeps", "a", 60_000).await.expect("lease"), "a free lease is taken");
    assert!(!store.try_lease("sweeps", "b", 60_000).await.expect("lease"), "a running lease is not shared");
    assert!(store.try_lease("sweeps", "a", 60_000).await.expect("lease"), "its holder renews it");
    assert!(store.try_lease("other", "b", 60_000).await.expect("lease"), "leases are independent by name");
    assert!(store.try_lease("short", "a", 1).await.expect("lease"));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(store.try_lease("short", "b", 60_000).await.expect("lease"), "a lapsed lease is taken over");
    assert!(!store.try_lease("short", "a", 60_000).await.expect("lease"), "and its old holder lost it");
}

fn project(name: &str) -> Project {
    let t = Utc::now();
    Project {
        id: Uuid::new_v4(),
        name: name.into(),
        description: "d".into(),
        settings: ProjectSettings {
            domain_id: crate::domains::DEFAULT_DOMAIN_ID,
            classification_type: None,
            target_export_platforms: vec![],
            use_negative_set: true,
            detection_parameters: None,
            image_processing_settings: None,
        },
        created: t,
        last_modified: t,
        thumbnail_uri: String::new(),
        dr_mode_enabled: false,
        status: "Succeeded".into(),
    }
}

fn tag(name: &str) -> TagRecord {
    TagRecord {
        id: Uuid::new_v4(),
        name: name.into(),
        description: String::new(),
        kind: TagType::Regular,
        created: Utc::now(),
    }
}

fn image(hash: &str, tags: Vec<Uuid>, regions: Vec<NewRegion>) -> NewImage {
    NewImage {
        id: Uuid::new_v4(),
        created: Utc::now(),
        width: 64,
        height: 48,
        mime: "image/jpeg".into(),
        byte_size: 100,
        content_hash: hash.into(),
        metadata: Default::default(),
        tag_ids: tags,
        regions,
    }
}

fn region(tag: Uuid) -> NewRegion {
    NewRegion {
        id: Uuid::new_v4(),
        tag_id: tag,
        bbox: BoundingBox { left: 0.1, top: 0.2, width: 0.3, height: 0.4 },
        polygon: None,
        created: Utc::now(),
    }
}

fn job(kind: &str) -> NewJob {
    NewJob { kind: kind.into(), scope: "p".into(), payload: serde_json::json!({"x": 1}), max_attempts: 2 }
}

async fn secrets_are_stored_once<S: MetadataStore>(s: &S) {
    assert_eq!(s.secret_or_insert("k", "first").await.expect("secret"), ("first".to_string(), true));
    assert_eq!(s.secret_or_insert("k", "second").await.expect("secret"), ("first".to_string(), false));
    assert_eq!(s.secret_or_insert("other", "x").await.expect("secret"), ("x".to_string(), true));
}

async fn projects_round_trip<S: MetadataStore>(s: &S) {
    let mut p = project("one");
    s.insert_project(&p).await.expect("insert project");
    assert!(
        matches!(s.insert_project(&p).await, Err(StoreError::Conflict(_))),
        "a second project with the same id must be a Conflict"
    );
    let got = s.get_project(p.id).await.expect("get").expect("the project");
    assert_eq!((got.name.as_str(), got.description.as_str()), ("one", "d"));
    assert_eq!(got.settings, p.settings);
    assert_eq!(s.count_projects().await.expect("count"), 1);
    assert!(s.project_ids().await.expect("ids").contains(&p.id));
    p.name = "renamed".into();
    s.update_project(&p).await.expect("update");
    assert_eq!(s.list_projects().await.expect("list")[0].name, "renamed");
    assert!(s.delete_project(p.id).await.expect("delete"));
    assert!(!s.delete_project(p.id).await.expect("delete again"), "deleting a missing project is false");
    assert!(s.get_project(p.id).await.expect("get").is_none());
}

async fn tags_are_unique_by_name_per_project_and_by_id_everywhere<S: MetadataStore>(s: &S) {
    let (a, b) = (project("a"), project("b"));
    s.insert_project(&a).await.expect("a");
    s.insert_project(&b).await.expect("b");
    let t = tag("cat");
    s.insert_tag(a.id, &t).await.expect("tag");
    assert!(matches!(s.insert_tag(a.id, &tag("cat")).await, Err(StoreError::Conflict(_))), "same name, same project");
    s.insert_tag(b.id, &tag("cat")).await.expect("the same name in another project is fine");
    let same_id = TagRecord { name: "other".into(), ..t.clone() };
    assert!(matches!(s.insert_tag(b.id, &same_id).await, Err(StoreError::Conflict(_))), "tag ids are unique");
    let listed = s.list_tags(a.id).await.expect("list");
    assert_eq!((listed.len(), listed[0].image_count), (1, 0));
    let mut got = s.get_tag(a.id, t.id).await.expect("get").expect("tag");
    assert!(s.get_tag(b.id, t.id).await.expect("get").is_none(), "a tag belongs to one project");
    got.name = "feline".into();
    s.update_tag(a.id, &got).await.expect("update");
    assert_eq!(s.get_tag(a.id, t.id).await.expect("get").expect("tag").name, "feline");
    assert!(s.delete_tag(a.id, t.id).await.expect("delete"));
    assert!(s.list_tags(a.id).await.expect("list").is_empty());
}

/// Several nodes uploading into one project at once: the same bytes end up stored once (the other batches
/// answer Duplicate, not an error), and the quota holds across the batches.
async fn concurrent_batches_into_one_project_dedupe_and_keep_the_quota<S: MetadataStore>(s: &S) {
    let p = project("concurrent");
    s.insert_project(&p).await.expect("project");
    let batches: Vec<Vec<NewImage>> = (0..4)
        .map(|_| vec![image("same", vec![], vec![]), image(&Uuid::new_v4().to_string(), vec![], vec![])])
        .collect();
    let outcomes = futures::future::join_all(batches.iter().map(|b| s.insert_images(p.id, b, 4))).await;
    let outcomes: Vec<InsertOutcome> =
        outcomes.into_iter().flat_map(|o| o.expect("a concurrent batch must not fail")).collect();
    let inserted = outcomes.iter().filter(|o| **o == InsertOutcome::Inserted).count();
    let duplicates = outcomes.iter().filter(|o| matches!(o, InsertOutcome::Duplicate(_))).count();
    let refused = outcomes.iter().filter(|o| **o == InsertOutcome::QuotaExceeded).count();
    assert_eq!(inserted, 4, "{outcomes:?}");
    assert_eq!((duplicates, refused), (3, 1), "{outcomes:?}");
    let all = ImageQuery { take: 100, ..Default::default() };
    assert_eq!(s.count_images(p.id, &all).await.expect("count"), 4);
}

async fn images_deduplicate_respect_the_quota_and_carry_labels<S: MetadataStore>(s: &S) {
    let p = project("images");
    s.insert_project(&p).await.expect("project");
    let (cat, dog) = (tag("cat"), tag("dog"));
    s.insert_tag(p.id, &cat).await.expect("cat");
    s.insert_tag(p.id, &dog).await.expect("dog");
    let first = image("h1", vec![cat.id], vec![]);
    let boxed = image("h2", vec![], vec![region(dog.id)]);
    let again = image("h1", vec![dog.id], vec![]);
    let bare = image("h3", vec![], vec![]);
    let outcomes = s.insert_images(p.id, &[first.clone(), boxed.clone(), again], 10).await.expect("insert");
    assert_eq!(outcomes, vec![InsertOutcome::Inserted, InsertOutcome::Inserted, InsertOutcome::Duplicate(first.id)]);
    assert_eq!(
        s.insert_images(p.id, std::slice::from_ref(&bare), 2).await.expect("quota"),
        vec![InsertOutcome::QuotaExceeded]
    );
    assert_eq!(
        s.insert_images(p.id, std::slice::from_ref(&bare), 10).await.expect("insert"),
        vec![InsertOutcome::Inserted]
    );
    assert_eq!(s.find_image_by_hash(p.id, "h2").await.expect("hash"), Some(boxed.id));
    assert_eq!(s.find_image_by_hash(p.id, "nope").await.expect("hash"), None);

    // An image's tags include its regions' tags.
    let got = s.get_images(p.id, &[boxed.id]).await.expect("get");
    assert_eq!(got[0].tags.iter().map(|t| t.tag_id).collect::<Vec<_>>(), vec![dog.id]);
    assert_eq!(got[0].regions.len(), 1);
    assert!((got[0].regions[0].width - 0.3).abs() < 1e-9);
    let tagged = ImageQuery { tagging: TaggingStatus::Tagged, take: 100, ..Default::default() };
    let untagged = ImageQuery { tagging: TaggingStatus::Untagged, take: 100, ..Default::default() };
    assert_eq!(s.count_images(p.id, &tagged).await.expect("count"), 2);
    assert_eq!(s.query_images(p.id, &untagged).await.expect("untagged")[0].id, bare.id);
    let counts: Vec<i64> = s.list_tags(p.id).await.expect("tags").iter().map(|t| t.image_count).collect();
    assert_eq!(counts, vec![1, 1]);

    // Labels: tag links are idempotent, regions come and go, metadata replaces.
    let now = Utc::now();
    s.add_image_tags(p.id, &[(bare.id, cat.id, now), (bare.id, cat.id, now)]).await.expect("tags");
    assert_eq!(s.get_images(p.id, &[bare.id]).await.expect("get")[0].tags.len(), 1);
    s.delete_image_tags(p.id, &[bare.id], &[cat.id]).await.expect("untag");
    assert!(s.get_images(p.id, &[bare.id]).await.expect("get")[0].tags.is_empty());
    let r = region(cat.id);
    s.add_regions(p.id, &[(bare.id, r.clone())]).await.expect("region");
    assert_eq!(s.get_images(p.id, &[bare.id]).await.expect("get")[0].regions.len(), 1);
    assert_eq!(s.get_images(p.id, &[bare.id]).await.expect("get")[0].regions[0].polygon, None);
    s.delete_regions(p.id, &[r.id]).await.expect("delete region");
    assert!(s.get_images(p.id, &[bare.id]).await.expect("get")[0].regions.is_empty());
    // A segmented region keeps its outline.
    let ring =
        |x: f64| vec![PolygonPoint { x, y: 0.2 }, PolygonPoint { x: x + 0.1, y: 0.2 }, PolygonPoint { x, y: 0.5 }];
    let outlined = NewRegion { polygon: Some(vec![ring(0.1), ring(0.3)]), ..region(cat.id) };
    s.add_regions(p.id, &[(bare.id, outlined.clone())]).await.expect("outlined region");
    assert_eq!(s.get_images(p.id, &[bare.id]).await.expect("get")[0].regions[0].polygon, outlined.polygon);
    s.delete_regions(p.id, &[outlined.id]).await.expect("delete region");
    let meta: crate::model::Metadata = [("camera".to_string(), "a".to_string())].into_iter().collect();
    s.set_metadata(p.id, &[(first.id, meta.clone())]).await.expect("metadata");
    assert_eq!(s.get_images(p.id, &[first.id]).await.expect("get")[0].metadata, meta);

    let existing = s.existing_image_ids(p.id, &[first.id, Uuid::new_v4()]).await.expect("existing");
    assert_eq!(existing.len(), 1);
    let deleted = s.delete_images(p.id, Some(&[first.id]), &HashSet::new()).await.expect("delete");
    assert_eq!(deleted, DeletedImages { deleted: vec![first.id], retired: vec![] });
    assert_eq!(s.find_image_by_hash(p.id, "h1").await.expect("hash"), None, "a deleted image's bytes may come again");
    assert!(s.existing_image_ids(p.id, &[first.id]).await.expect("existing").is_empty());

    // Retiring: a retained image leaves the workspace but stays readable, with its metadata, until purged.
    let retain: HashSet<Uuid> = [boxed.id].into_iter().collect();
    let done = s.delete_images(p.id, None, &retain).await.expect("delete all");
    assert_eq!(done.retired, vec![boxed.id]);
    assert_eq!(done.deleted, vec![bare.id]);
    assert_eq!(s.count_images(p.id, &ImageQuery { take: 100, ..Default::default() }).await.expect("count"), 0);
    assert_eq!(s.find_image_by_hash(p.id, "h2").await.expect("hash"), None, "retired bytes may come again");
    let retired = s.get_retired_images(p.id, &[bare.id, boxed.id]).await.expect("retired");
    assert_eq!(retired.iter().map(|r| r.id).collect::<Vec<_>>(), vec![boxed.id]);
    assert_eq!((retired[0].width, retired[0].content_hash.as_str()), (boxed.width, "h2"));
    assert!(s.existing_image_ids(p.id, &[boxed.id]).await.expect("existing").contains(&boxed.id));
    assert!(s.purge_retired_images(p.id, None, &retain).await.expect("purge kept").is_empty());
    assert_eq!(s.purge_retired_images(p.id, Some(&[boxed.id]), &HashSet::new()).await.expect("purge"), vec![boxed.id]);
    assert!(s.get_retired_images(p.id, &[boxed.id]).await.expect("retired").is_empty());
}

async fn deleting_a_project_removes_what_it_owns<S: MetadataStore>(s: &S) {
    let p = project("doomed");
    s.insert_project(&p).await.expect("project");
    let t = tag("t");
    s.insert_tag(p.id, &t).await.expect("tag");
    let img = image("x", vec![t.id], vec![region(t.id)]);
    s.insert_images(p.id, std::slice::from_ref(&img), 10).await.expect("image");
    assert!(s.delete_project(p.id).await.expect("delete"));
    assert!(s.list_tags(p.id).await.expect("tags").is_empty());
    assert!(s.get_images(p.id, &[img.id]).await.expect("images").is_empty());
    // The tag id is free again.
    let q = project("again");
    s.insert_project(&q).await.expect("project");
    s.insert_tag(q.id, &t).await.expect("a deleted project's tag ids are free");
}

/// Iteration `n` of `p`, in `Training`.
fn training_iteration(p: &Project, n: u32) -> Iteration {
    let t = Utc::now();
    Iteration {
        id: Uuid::new_v4(),
        name: format!("Iteration {n}"),
        status: IterationStatus::Training,
        created: t,
        last_modified: t,
        trained_at: None,
        project_id: p.id,
        exportable: false,
        exportable_to: vec![],
        domain_id: Some(p.settings.domain_id),
        classification_type: None,
        training_type: "Regular".into(),
        reserved_budget_in_hours: 0,
        training_time_in_minutes: 0,
        publish_name: String::new(),
        original_publish_resource_id: String::new(),
        training_progress: Some(0.0),
        training_message: None,
    }
}

/// Two nodes answering TrainProject for one project at the same moment: one iteration and job are created, the
/// other insert is a conflict.
async fn two_trainings_started_together_make_one<S: MetadataStore + JobQueue>(s: &S) {
    let p = project("race");
    s.insert_project(&p).await.expect("project");
    let (a, b) = (training_iteration(&p, 1), training_iteration(&p, 2));
    let new_job = NewJob { scope: p.id.to_string(), ..job("train") };
    let snapshot = serde_json::json!({});
    let (ra, rb) = futures::join!(
        s.insert_iteration_with_job(&a, &snapshot, &new_job),
        s.insert_iteration_with_job(&b, &snapshot, &new_job)
    );
    let conflicts = [&ra, &rb].iter().filter(|r| matches!(r, Err(StoreError::Conflict(_)))).count();
    assert_eq!((ra.is_ok() as u32 + rb.is_ok() as u32, conflicts), (1, 1), "{ra:?} {rb:?}");
    assert_eq!(s.count_iterations(p.id).await.expect("count"), 1);
    assert_eq!(s.active_jobs("train", &p.id.to_string()).await.expect("active"), 1);
}

/// ImportProject brings iterations already trained: they are inserted whole (snapshot and evaluation), start
/// no job, and one still `Training` is refused (nothing would ever finish it).
async fn a_trained_iteration_is_imported_without_a_job<S: MetadataStore + JobQueue>(s: &S) {
    let p = project("imported");
    s.insert_project(&p).await.expect("project");
    let mut it = training_iteration(&p, 1);
    let snapshot = serde_json::json!({"images": [1]});
    let evaluation = serde_json::json!({"folds": 2});
    let refused = s.insert_trained_iteration(&it, &snapshot, Some(&evaluation)).await;
    assert!(matches!(refused, Err(StoreError::Conflict(_))), "{refused:?}");
    it.status = IterationStatus::Completed;
    s.insert_trained_iteration(&it, &snapshot, Some(&evaluation)).await.expect("import");
    let (got, snap) = s.get_iteration(p.id, it.id).await.expect("get").expect("iteration");
    assert_eq!((got.status, snap), (IterationStatus::Completed, snapshot.clone()));
    assert!(s.get_job(it.id).await.expect("job").is_none(), "an imported iteration has no job");
    assert_eq!(s.get_evaluation(p.id, it.id).await.expect("evaluation"), Some(evaluation));
    assert_eq!(s.active_jobs("train", &p.id.to_string()).await.expect("active"), 0);
    assert!(s.insert_trained_iteration(&it, &snapshot, None).await.is_err(), "the same id twice");
    assert_eq!(s.count_iterations(p.id).await.expect("count"), 1);
    // Smart-labeler suggestions of the iteration: saving one again for an image replaces it.
    let bare = image("suggested", vec![], vec![]);
    s.insert_images(p.id, std::slice::from_ref(&bare), 10).await.expect("image");
    let suggestion = |uncertainty| crate::store::Suggestion {
        image_id: bare.id,
        created: Utc::now(),
        uncertainty,
        predictions: Vec::new(),
    };
    s.put_suggestions(p.id, it.id, &[suggestion(0.2)]).await.expect("suggest");
    s.put_suggestions(p.id, it.id, &[suggestion(0.9)]).await.expect("suggest again");
    let got = s.untagged_suggestions(p.id, it.id).await.expect("suggestions");
    assert_eq!(got.iter().map(|g| (g.image_id, g.uncertainty)).collect::<Vec<_>>(), vec![(bare.id, 0.9)]);
}

async fn an_iteration_is_created_with_its_job<S: MetadataStore + JobQueue>(s: &S) {
    let p = project("train");
    s.insert_project(&p).await.expect("project");
    let mut it = training_iteration(&p, 1);
    let snapshot = serde_json::json!({"images": [1, 2, 3]});
    let new_job = NewJob { scope: p.id.to_string(), ..job("train") };
    s.insert_iteration_with_job(&it, &snapshot, &new_job).await.expect("iteration and job");
    let (got, snap) = s.get_iteration(p.id, it.id).await.expect("get").expect("iteration");
    assert_eq!((got.status, snap), (IterationStatus::Training, snapshot.clone()));
    let queued = s.get_job(it.id).await.expect("job").expect("the iteration's job has its id");
    assert_eq!((queued.status, queued.kind.as_str()), (JobStatus::Queued, "train"));
    assert_eq!(s.active_jobs("train", &p.id.to_string()).await.expect("active"), 1);
    // While its job is queued, another training of the project is refused, as a conflict.
    let mut second = it.clone();
    second.id = Uuid::new_v4();
    let refused = s.insert_iteration_with_job(&second, &snapshot, &new_job).await;
    assert!(matches!(refused, Err(StoreError::Conflict(_))), "{refused:?}");
    // The same iteration twice is refused and changes nothing: one iteration, its one job.
    assert!(s.insert_iteration_with_job(&it, &snapshot, &new_job).await.is_err());
    assert_eq!(s.count_iterations(p.id).await.expect("count"), 1);
    assert_eq!(s.active_jobs("train", &p.id.to_string()).await.expect("active"), 1);
    it.status = IterationStatus::Completed;
    s.update_iteration(&it).await.expect("update");
    assert_eq!(s.list_iterations(p.id).await.expect("list")[0].status, IterationStatus::Completed);
    assert!(s.iteration_exists(p.id, it.id).await.expect("exists"));
    assert!(s.delete_iteration(p.id, it.id).await.expect("delete"));
    assert!(!s.iteration_exists(p.id, it.id).await.expect("exists"));
}

async fn jobs_are_claimed_once_and_survive_dead_workers<S: JobQueue>(s: &S) {
    let kinds = vec!["train".to_string()];
    let a = s.enqueue(job("train")).await.expect("enqueue");
    s.enqueue(job("other")).await.expect("enqueue");
    assert_eq!(s.active_jobs("train", "p").await.expect("active"), 1);
    let depth = |q: u64, r: u64| vec![("other".to_string(), 1, 0), ("train".to_string(), q, r)];
    assert_eq!(s.queue_depth().await.expect("depth"), depth(1, 0));
    let Some(Claimed::Run(j)) = s.claim(&kinds, "w1", 60_000).await.expect("claim") else { panic!("no job") };
    assert_eq!((j.id, j.attempts), (a.id, 1));
    assert_eq!(s.queue_depth().await.expect("depth"), depth(0, 1));
    assert!(s.claim(&kinds, "w2", 60_000).await.expect("claim").is_none(), "leased job claimed twice");
    assert!(s.heartbeat(j.id, "w1", 0.5, Some("half"), 60_000).await.expect("hb"));
    assert!(!s.heartbeat(j.id, "w2", 0.5, None, 60_000).await.expect("hb"), "stranger renewed the lease");
    // w1 dies: once the lease lapses the job runs again (attempt 2), then is abandoned.
    assert!(s.heartbeat(j.id, "w1", 0.5, None, -1).await.expect("expire"));
    let Some(Claimed::Run(j2)) = s.claim(&kinds, "w2", -1).await.expect("claim") else { panic!("not rerun") };
    assert_eq!(j2.attempts, 2);
    let Some(Claimed::Abandoned(j3)) = s.claim(&kinds, "w3", 60_000).await.expect("claim") else {
        panic!("not abandoned")
    };
    assert_eq!(j3.status, JobStatus::Failed);
    assert_eq!(s.queue_depth().await.expect("depth"), vec![("other".to_string(), 1, 0)], "finished jobs counted");
    assert!(!s.complete(j3.id, "w2", &serde_json::json!(null)).await.expect("complete"));
    assert_eq!(s.get_job(a.id).await.expect("get").map(|j| j.status), Some(JobStatus::Failed));
}

async fn failed_attempts_retry_then_complete<S: JobQueue>(s: &S) {
    let kinds = vec!["train".to_string()];
    let a = s.enqueue(job("train")).await.expect("enqueue");
    let Some(Claimed::Run(j)) = s.claim(&kinds, "w", 60_000).await.expect("claim") else { panic!("no job") };
    assert!(s.fail(j.id, "w", "transient", true).await.expect("fail"));
    let Some(Claimed::Run(j)) = s.claim(&kinds, "w", 60_000).await.expect("claim") else { panic!("no retry") };
    assert!(s.complete(j.id, "w", &serde_json::json!({"ok": true})).await.expect("complete"));
    let done = s.get_job(a.id).await.expect("get").expect("job");
    assert_eq!((done.status, done.progress), (JobStatus::Completed, 1.0));
    assert_eq!(s.active_jobs("train", "p").await.expect("active"), 0);
    let b = s.enqueue(job("train")).await.expect("enqueue");
    let listed: Vec<_> = s.list_jobs("train", "p").await.expect("list").iter().map(|j| (j.id, j.status)).collect();
    assert_eq!(listed, vec![(a.id, JobStatus::Completed), (b.id, JobStatus::Queued)], "oldest first");
    assert!(s.list_jobs("other", "p").await.expect("list").is_empty());
}
