//! Tags.

use uuid::Uuid;

use super::{store_err, Argus};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::limits::{MAX_TAGS_PER_PROJECT, MAX_TAG_DESCRIPTION_LEN, MAX_TAG_NAME_LEN};
use crate::model::{now, Tag, TagType, TagUpdate};
use crate::store::{StoreError, TagRecord};

fn check_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_TAG_NAME_LEN {
        return Err(ApiError::new(
            ErrorCode::BadRequestTagName,
            format!("The tag name must be 1 to {MAX_TAG_NAME_LEN} characters."),
        ));
    }
    Ok(name.to_string())
}

fn check_description(d: &str) -> ApiResult<String> {
    if d.chars().count() > MAX_TAG_DESCRIPTION_LEN {
        return Err(ApiError::new(
            ErrorCode::BadRequestTagDescription,
            format!("The tag description must be at most {MAX_TAG_DESCRIPTION_LEN} characters."),
        ));
    }
    Ok(d.to_string())
}

fn parse_type(s: Option<&str>) -> ApiResult<TagType> {
    match s {
        None | Some("") => Ok(TagType::Regular),
        Some(s) => TagType::parse(s).ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadRequestTagType,
                format!("Unknown tag type '{s}' (use Regular, Negative or GeneralProduct)."),
            )
        }),
    }
}

fn conflict(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::BadRequestTagNameNotUnique,
        format!("A tag named '{name}' already exists in this project."),
    )
}

fn single_special(tags: &[Tag], kind: TagType, except: Option<Uuid>) -> ApiResult<()> {
    if kind == TagType::Regular {
        return Ok(());
    }
    if tags.iter().any(|t| t.kind == kind && Some(t.id) != except) {
        let code = match kind {
            TagType::Negative => ErrorCode::BadRequestMultipleNegativeTag,
            _ => ErrorCode::BadRequestMultipleGeneralProductTag,
        };
        return Err(ApiError::new(code, format!("A project can have only one {} tag.", kind.as_str())));
    }
    Ok(())
}

impl Argus {
    /// GetTags (`iterationId` selects the tags an iteration was trained with).
    pub async fn tags(&self, project: Uuid, iteration: Option<Uuid>) -> ApiResult<Vec<Tag>> {
        self.project(project).await?;
        match iteration {
            Some(it) => self.iteration_tags(project, it).await,
            None => self.store.list_tags(project).await.map_err(store_err),
        }
    }

    /// GetTag.
    pub async fn tag(&self, project: Uuid, tag: Uuid, iteration: Option<Uuid>) -> ApiResult<Tag> {
        self.project(project).await?;
        if let Some(it) = iteration {
            return self
                .iteration_tags(project, it)
                .await?
                .into_iter()
                .find(|t| t.id == tag)
                .ok_or_else(|| ApiError::new(ErrorCode::NotFoundTag, format!("Tag {tag} was not in iteration {it}.")));
        }
        self.store
            .get_tag(project, tag)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFoundTag, format!("Tag {tag} was not found.")))
    }

    /// CreateTag.
    pub async fn create_tag(
        &self,
        project: Uuid,
        name: Option<&str>,
        description: Option<&str>,
        kind: Option<&str>,
        requested_id: Option<Uuid>,
    ) -> ApiResult<Tag> {
        self.project(project).await?;
        let name = check_name(name.unwrap_or(""))?;
        let description = check_description(description.unwrap_or(""))?;
        let kind = parse_type(kind)?;
        let existing = self.store.list_tags(project).await.map_err(store_err)?;
        if existing.len() >= MAX_TAGS_PER_PROJECT {
            return Err(ApiError::new(
                ErrorCode::BadRequestExceedTagPerProjectLimit,
                format!("A project can have at most {MAX_TAGS_PER_PROJECT} tags."),
            ));
        }
        single_special(&existing, kind, None)?;
        let record = TagRecord {
            id: requested_id.unwrap_or_else(Uuid::new_v4),
            name: name.clone(),
            description,
            kind,
            created: now(),
        };
        match self.store.insert_tag(project, &record).await {
            Ok(()) => {}
            // Tag names are unique per project, ids across the server: tell the two apart.
            Err(StoreError::Conflict(_)) if requested_id.is_some() && !existing.iter().any(|t| t.name == name) => {
                return Err(super::projects::id_in_use("Tag", record.id))
            }
            Err(StoreError::Conflict(_)) => return Err(conflict(&name)),
            Err(e) => return Err(store_err(e)),
        }
        Ok(Tag { id: record.id, name: record.name, description: record.description, kind, image_count: 0 })
    }

    /// UpdateTag.
    pub async fn update_tag(&self, project: Uuid, tag: Uuid, update: TagUpdate) -> ApiResult<Tag> {
        let mut current = self.tag(project, tag, None).await?;
        if let Some(n) = &update.name {
            current.name = check_name(n)?;
        }
        if let Some(d) = &update.description {
            current.description = check_description(d)?;
        }
        if let Some(k) = &update.kind {
            let kind = parse_type(Some(k))?;
            let existing = self.store.list_tags(project).await.map_err(store_err)?;
            single_special(&existing, kind, Some(tag))?;
            current.kind = kind;
        }
        match self.store.update_tag(project, &current).await {
            Ok(()) => Ok(current),
            Err(StoreError::Conflict(_)) => Err(conflict(&current.name)),
            Err(e) => Err(store_err(e)),
        }
    }

    /// DeleteTag: also removes the tag from every image and deletes its regions.
    pub async fn delete_tag(&self, project: Uuid, tag: Uuid) -> ApiResult<()> {
        self.project(project).await?;
        if !self.store.delete_tag(project, tag).await.map_err(store_err)? {
            return Err(ApiError::new(ErrorCode::NotFoundTag, format!("Tag {tag} was not found.")));
        }
        Ok(())
    }
}
