//! Training API handlers: domains and projects (CRUD, ExportProject / ImportProject, artifacts).

use super::*;

// ---- domains ----

pub(super) async fn get_domains(State(s): State<AppState>) -> Response {
    ok_json(s.argus.domains())
}

pub(super) async fn get_domain(State(s): State<AppState>, Path(id): Path<String>) -> HttpResult<Response> {
    Ok(ok_json(s.argus.domain(path_id("domainId", &id)?)?))
}

// ---- projects ----

pub(super) async fn get_projects(State(s): State<AppState>) -> HttpResult<Response> {
    Ok(ok_json(s.argus.projects().await?))
}

pub(super) async fn create_project(State(s): State<AppState>, q: Query) -> HttpResult<Response> {
    // SDK 3.1.x may send a JSON body {exportModelContainerUri, notificationQueueUri}; it is accepted and ignored.
    let input = NewProject {
        name: q.str("name").map(String::from),
        description: q.str("description").map(String::from),
        domain_id: match q.uuid("domainId") {
            Ok(d) => d,
            Err(_) => {
                return Err(ApiError::new(
                    ErrorCode::BadRequestProjectUnknownDomain,
                    format!("'{}' is not a valid domain id.", q.str("domainId").unwrap_or("")),
                )
                .into())
            }
        },
        classification_type: q.str("classificationType").map(String::from),
        target_export_platforms: q.strings("targetExportPlatforms"),
        // Argus extension (`argus import customvision` keeps the source's ids); absent from the official spec.
        requested_id: q.uuid("requestedId")?,
    };
    Ok(ok_json(s.argus.create_project(input).await?))
}

pub(super) async fn get_project(State(s): State<AppState>, Path(p): Path<String>) -> HttpResult<Response> {
    Ok(ok_json(s.argus.get_project(path_id("projectId", &p)?).await?))
}

pub(super) async fn delete_project(State(s): State<AppState>, Path(p): Path<String>) -> HttpResult<StatusCode> {
    s.argus.delete_project(path_id("projectId", &p)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn update_project(
    State(s): State<AppState>,
    Path(p): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResult<Response> {
    let id = path_id("projectId", &p)?;
    let update: ProjectUpdate = json_body(&headers, &body)?;
    Ok(ok_json(s.argus.update_project(id, update).await?))
}

pub(super) async fn export_project(
    State(s): State<AppState>,
    BaseUrl(ctx): BaseUrl,
    Path(p): Path<String>,
) -> HttpResult<Response> {
    Ok(ok_json(s.argus.export_project(&ctx, path_id("projectId", &p)?).await?))
}

pub(super) async fn import_project(State(s): State<AppState>, q: Query) -> HttpResult<Response> {
    let token = q.required("token")?;
    Ok(ok_json(s.argus.import_project(token, q.str("name")).await?))
}

pub(super) async fn get_artifact(State(s): State<AppState>, Path(p): Path<String>, q: Query) -> HttpResult<Response> {
    let id = path_id("projectId", &p)?;
    let data = s.argus.get_artifact(id, q.required("path")?).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}
