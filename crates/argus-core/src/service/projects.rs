//! Projects and domains.

use uuid::Uuid;

use super::{project_prefix, store_err, Argus};
use crate::domains::{find_domain, Domain, DomainType, DEFAULT_DOMAIN_ID, DOMAINS};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::limits::{MAX_PROJECT_DESCRIPTION_LEN, MAX_PROJECT_NAME_LEN};
use crate::model::{now, ClassificationType, ImageProcessingSettings, Project, ProjectSettings, ProjectUpdate};
use crate::store::StoreError;

const EXPORT_PLATFORMS: &[&str] = &["CoreML", "TensorFlow", "DockerFile", "ONNX", "VAIDK", "OpenVino"];

/// Inputs of CreateProject.
#[derive(Debug, Clone, Default)]
pub struct NewProject {
    /// Name (required).
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Domain id (default General classification).
    pub domain_id: Option<Uuid>,
    /// Multiclass / Multilabel (classification only).
    pub classification_type: Option<String>,
    /// Export platforms.
    pub target_export_platforms: Vec<String>,
    /// The id the project should get (an Argus extension for migrations, so that scripts keep their ids);
    /// refused when another project has it. None: a new random id.
    pub requested_id: Option<Uuid>,
}

/// The error for a requested id (CreateProject / CreateTag `requestedId`) that something else already has.
pub(crate) fn id_in_use(what: &str, id: Uuid) -> ApiError {
    ApiError::new(ErrorCode::BadRequestInvalidIds, format!("{what} id {id} is already in use."))
}

fn check_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_PROJECT_NAME_LEN {
        return Err(ApiError::new(
            ErrorCode::BadRequestProjectName,
            format!("The project name must be 1 to {MAX_PROJECT_NAME_LEN} characters."),
        ));
    }
    Ok(name.to_string())
}

fn check_description(d: &str) -> ApiResult<String> {
    if d.chars().count() > MAX_PROJECT_DESCRIPTION_LEN {
        return Err(ApiError::new(
            ErrorCode::BadRequestProjectDescription,
            format!("The project description must be at most {MAX_PROJECT_DESCRIPTION_LEN} characters."),
        ));
    }
    Ok(d.to_string())
}

fn domain(id: Uuid) -> ApiResult<&'static Domain> {
    find_domain(id)
        .ok_or_else(|| ApiError::new(ErrorCode::BadRequestProjectUnknownDomain, format!("Unknown domain {id}.")))
}

fn classification(domain: &Domain, requested: Option<&str>) -> ApiResult<Option<ClassificationType>> {
    let parsed = match requested {
        None | Some("") => None,
        Some(s) => Some(ClassificationType::parse(s).ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadRequestProjectUnknownClassification,
                format!("Unknown classification type '{s}' (use Multiclass or Multilabel)."),
            )
        })?),
    };
    Ok(match domain.kind {
        DomainType::Classification => Some(parsed.unwrap_or(ClassificationType::Multiclass)),
        DomainType::ObjectDetection => None,
    })
}

fn export_platforms(domain: &Domain, platforms: &[String]) -> ApiResult<Vec<String>> {
    let mut out = Vec::new();
    for p in platforms.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let Some(canon) = EXPORT_PLATFORMS.iter().find(|e| e.eq_ignore_ascii_case(p)) else {
            return Err(ApiError::new(
                ErrorCode::BadRequestProjectUnsupportedExportPlatform,
                format!("Unknown export platform '{p}'."),
            ));
        };
        if !domain.exportable && !domain.name.contains("compact") {
            return Err(ApiError::new(
                ErrorCode::BadRequestProjectUnsupportedExportPlatform,
                format!("Domain '{}' cannot be exported; choose a compact domain.", domain.name),
            ));
        }
        if !out.iter().any(|o: &String| o == canon) {
            out.push(canon.to_string());
        }
    }
    Ok(out)
}

impl Argus {
    /// GetDomains.
    pub fn domains(&self) -> &'static [Domain] {
        DOMAINS
    }

    /// GetDomain.
    pub fn domain(&self, id: Uuid) -> ApiResult<&'static Domain> {
        find_domain(id).ok_or_else(|| ApiError::new(ErrorCode::NotFoundDomain, format!("Domain {id} was not found.")))
    }

    /// CreateProject.
    pub async fn create_project(&self, input: NewProject) -> ApiResult<Project> {
        let name = check_name(input.name.as_deref().unwrap_or(""))?;
        let description = check_description(input.description.as_deref().unwrap_or(""))?;
        let domain = domain(input.domain_id.unwrap_or(DEFAULT_DOMAIN_ID))?;
        let classification_type = classification(domain, input.classification_type.as_deref())?;
        let target_export_platforms = export_platforms(domain, &input.target_export_platforms)?;
        if self.store.count_projects().await.map_err(store_err)? >= self.config.max_projects {
            return Err(ApiError::new(
                ErrorCode::BadRequestExceedProjectLimit,
                format!("This server allows at most {} projects.", self.config.max_projects),
            ));
        }
        if let Some(id) = input.requested_id {
            if self.store.get_project(id).await.map_err(store_err)?.is_some() {
                return Err(id_in_use("Project", id));
            }
        }
        let t = now();
        let project = Project {
            id: input.requested_id.unwrap_or_else(Uuid::new_v4),
            name,
            description,
            settings: ProjectSettings {
                domain_id: domain.id,
                classification_type,
                target_export_platforms,
                use_negative_set: true,
                detection_parameters: None,
                image_processing_settings: Some(ImageProcessingSettings::default()),
            },
            created: t,
            last_modified: t,
            thumbnail_uri: String::new(),
            dr_mode_enabled: false,
            status: "Succeeded".into(),
        };
        match self.store.insert_project(&project).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(id_in_use("Project", project.id)),
            Err(e) => return Err(store_err(e)),
        }
        tracing::info!(project = %project.id, name = %project.name, "project created");
        Ok(project)
    }

    /// GetProjects.
    pub async fn projects(&self) -> ApiResult<Vec<Project>> {
        self.store.list_projects().await.map_err(store_err)
    }

    /// GetProject.
    pub async fn get_project(&self, id: Uuid) -> ApiResult<Project> {
        self.project(id).await
    }

    /// UpdateProject: name, description and settings (domain within the same type, classification type,
    /// export platforms, augmentation settings).
    pub async fn update_project(&self, id: Uuid, update: ProjectUpdate) -> ApiResult<Project> {
        let mut project = self.project(id).await?;
        if let Some(name) = &update.name {
            project.name = check_name(name)?;
        }
        if let Some(d) = &update.description {
            project.description = check_description(d)?;
        }
        if let Some(s) = update.settings {
            let old = domain(project.settings.domain_id)?;
            let new = match s.domain_id {
                Some(d) => domain(d)?,
                None => old,
            };
            if new.kind != old.kind {
                return Err(ApiError::new(
                    ErrorCode::BadRequestProjectUnsupportedDomainTypeChange,
                    "A project cannot change between classification and object detection.",
                ));
            }
            let requested = s
                .classification_type
                .clone()
                .or_else(|| project.settings.classification_type.map(|c| format!("{c:?}")));
            project.settings.classification_type = classification(new, requested.as_deref())?;
            if let Some(p) = &s.target_export_platforms {
                project.settings.target_export_platforms = export_platforms(new, p)?;
            }
            if let Some(ip) = s.image_processing_settings {
                project.settings.image_processing_settings = Some(ip);
            }
            project.settings.domain_id = new.id;
        }
        project.last_modified = now();
        self.store.update_project(&project).await.map_err(store_err)?;
        Ok(project)
    }

    /// DeleteProject: rows first (one transaction), then the blobs. A crash in between leaves orphans that
    /// the sweep removes.
    pub async fn delete_project(&self, id: Uuid) -> ApiResult<()> {
        if !self.store.delete_project(id).await.map_err(store_err)? {
            return Err(ApiError::new(ErrorCode::NotFoundProject, format!("Project {id} was not found.")));
        }
        if let Err(e) = self.blobs.delete_prefix(&project_prefix(id)).await {
            tracing::warn!(project = %id, error = %e, "blob cleanup failed; the sweep will retry");
        }
        tracing::info!(project = %id, "project deleted");
        Ok(())
    }
}
