//! Training API handlers: tags.

use super::*;

// ---- tags ----

pub(super) async fn get_tags(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<Response> {
    Ok(ok_json(s.argus.tags(path_id("projectId", &p)?, q.uuid("iterationId")?).await?))
}

pub(super) async fn get_tag(
    State(s): State<AppState>,
    Path((p, t)): Path<(String, String)>,
    q: Query,
) -> HttpResult<Response> {
    Ok(ok_json(s.argus.tag(path_id("projectId", &p)?, path_id("tagId", &t)?, q.uuid("iterationId")?).await?))
}

pub(super) async fn create_tag(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<Response> {
    let id = path_id("projectId", &p)?;
    let requested = q.uuid("requestedId")?; // Argus extension, as in CreateProject.
    Ok(ok_json(s.argus.create_tag(id, q.str("name"), q.str("description"), q.str("type"), requested).await?))
}

pub(super) async fn delete_tag(
    State(s): State<AppState>,
    Path((p, t)): Path<(String, String)>,
) -> HttpResult<StatusCode> {
    s.argus.delete_tag(path_id("projectId", &p)?, path_id("tagId", &t)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn update_tag(
    State(s): State<AppState>,
    Path((p, t)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let (p, t) = (path_id("projectId", &p)?, path_id("tagId", &t)?);
    let update: TagUpdate = json_body(&headers, &body)?;
    Ok(ok_json(s.argus.update_tag(p, t, update).await?))
}
