//! The well-known Custom Vision domains (base models), with the GUIDs the hosted service uses, so scripts
//! that hard-code them keep working.

use serde::Serialize;
use uuid::{uuid, Uuid};

/// Classification or object detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DomainType {
    /// Image classification.
    Classification,
    /// Object detection.
    ObjectDetection,
}

/// A domain as the Training API returns it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Domain {
    /// Well-known id.
    pub id: Uuid,
    /// Display name.
    pub name: &'static str,
    /// Classification or ObjectDetection.
    #[serde(rename = "type")]
    pub kind: DomainType,
    /// Whether iterations of this domain can be exported.
    pub exportable: bool,
    /// Always true here.
    pub enabled: bool,
    /// Platforms an exportable domain can export to (newer service versions return this).
    pub exportable_platforms: &'static [&'static str],
    /// Same list under the name some clients read.
    pub exportable_to: &'static [&'static str],
}

/// What a compact domain lists under `exportablePlatforms`: the platforms Argus itself exports to (the hosted
/// service's longer list would be a promise Argus cannot keep). Classifiers and detectors export to ONNX and
/// DockerFile. OpenVino exports are accepted too, but not listed: the v3.3 contract's `exportableTo` /
/// `exportablePlatforms` enums do not know that platform (it came with v3.4-preview), and v3.3 clients read these.
const EXPORT_PLATFORMS: &[&str] = &["ONNX", "DockerFile"];

const fn domain(id: Uuid, name: &'static str, kind: DomainType, compact: bool) -> Domain {
    // The hosted service marks every compact domain exportable and no other.
    let platforms: &[&str] = if compact { EXPORT_PLATFORMS } else { &[] };
    Domain {
        id,
        name,
        kind,
        exportable: compact,
        enabled: true,
        exportable_platforms: platforms,
        exportable_to: platforms,
    }
}

/// The id of the default domain (General classification).
pub const DEFAULT_DOMAIN_ID: Uuid = uuid!("ee85a74c-405e-4adc-bb47-ffa8ca0c9f31");

/// Whether Regular training in this domain uses the larger backbone (EfficientNet-Lite2 at 260 px instead of
/// Lite0 at 224): every classification domain but the compact ones, which keep the small model they are meant to
/// export to devices. On real photographs Lite2's features score 2–3 points higher with 5–10 photographs per tag
/// (README, Quality on real photographs). Advanced training always uses Lite2; detection is not affected.
pub fn large_backbone(id: Uuid) -> bool {
    find_domain(id).is_some_and(|d| d.kind == DomainType::Classification && !d.exportable)
}

/// All domains, in the order the hosted service's GetDomains returns them (ids and names as Microsoft's
/// `select-domain` page and the Azure SDK for .NET's recorded GetDomains answer give them).
pub static DOMAINS: &[Domain] = &[
    domain(uuid!("2e37d7fb-3a54-486a-b4d6-cfc369af0018"), "General [A2]", DomainType::Classification, false),
    domain(uuid!("a8e3c40f-fb4a-466f-832a-5e457ae4a344"), "General [A1]", DomainType::Classification, false),
    domain(DEFAULT_DOMAIN_ID, "General", DomainType::Classification, false),
    domain(uuid!("c151d5b5-dd07-472a-acc8-15d29dea8518"), "Food", DomainType::Classification, false),
    domain(uuid!("ca455789-012d-4b50-9fec-5bb63841c793"), "Landmarks", DomainType::Classification, false),
    domain(uuid!("b30a91ae-e3c1-4f73-a81e-c270bff27c39"), "Retail", DomainType::Classification, false),
    domain(uuid!("45badf75-3591-4f26-a705-45678d3e9f5f"), "Adult", DomainType::Classification, false),
    domain(uuid!("a1db07ca-a19a-4830-bae8-e004a42dc863"), "General (compact) [S1]", DomainType::Classification, true),
    domain(uuid!("0732100f-1a38-4e49-a514-c9b44c697ab5"), "General (compact)", DomainType::Classification, true),
    domain(uuid!("8882951b-82cd-4c32-970b-d5f8cb8bf6d7"), "Food (compact)", DomainType::Classification, true),
    domain(uuid!("b5cfd229-2ac7-4b2b-8d0a-2b0661344894"), "Landmarks (compact)", DomainType::Classification, true),
    domain(uuid!("6b4faeda-8396-481b-9f8b-177b9fa3097f"), "Retail (compact)", DomainType::Classification, true),
    domain(uuid!("9c616dff-2e7d-ea11-af59-1866da359ce6"), "General [A1]", DomainType::ObjectDetection, false),
    domain(uuid!("da2e3a8a-40a5-4171-82f4-58522f70fbc1"), "General", DomainType::ObjectDetection, false),
    domain(uuid!("1d8ffafe-ec40-4fb2-8f90-72b3b6cecea4"), "Logo", DomainType::ObjectDetection, false),
    domain(uuid!("3780a898-81c3-4516-81ae-3a139614e1f3"), "Products on Shelves", DomainType::ObjectDetection, false),
    domain(uuid!("7ec2ac80-887b-48a6-8df9-8b1357765430"), "General (compact) [S1]", DomainType::ObjectDetection, true),
    domain(uuid!("a27d5ca5-bb19-49d8-a70a-fec086c47f5b"), "General (compact)", DomainType::ObjectDetection, true),
];

/// Looks a domain up by id.
pub fn find_domain(id: Uuid) -> Option<&'static Domain> {
    DOMAINS.iter().find(|d| d.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_classification_uses_the_larger_backbone_except_in_compact_domains() {
        for d in DOMAINS {
            let expected = d.kind == DomainType::Classification && !d.name.contains("compact");
            assert_eq!(large_backbone(d.id), expected, "{}", d.name);
        }
        assert!(large_backbone(DEFAULT_DOMAIN_ID));
        assert!(!large_backbone(Uuid::nil()));
    }

    #[test]
    fn quickstart_lookups_work() {
        assert!(DOMAINS.iter().any(|d| d.kind == DomainType::ObjectDetection && d.name == "General"));
        assert_eq!(find_domain(DEFAULT_DOMAIN_ID).map(|d| d.name), Some("General"));
        let ids: std::collections::HashSet<_> = DOMAINS.iter().map(|d| d.id).collect();
        assert_eq!(ids.len(), DOMAINS.len());
        // The ids scripts hard-code, with the hosted service's names and kinds.
        for (id, name, kind) in [
            ("a8e3c40f-fb4a-466f-832a-5e457ae4a344", "General [A1]", DomainType::Classification),
            ("2e37d7fb-3a54-486a-b4d6-cfc369af0018", "General [A2]", DomainType::Classification),
            ("a1db07ca-a19a-4830-bae8-e004a42dc863", "General (compact) [S1]", DomainType::Classification),
            ("8882951b-82cd-4c32-970b-d5f8cb8bf6d7", "Food (compact)", DomainType::Classification),
            ("9c616dff-2e7d-ea11-af59-1866da359ce6", "General [A1]", DomainType::ObjectDetection),
            ("7ec2ac80-887b-48a6-8df9-8b1357765430", "General (compact) [S1]", DomainType::ObjectDetection),
        ] {
            let d = Uuid::parse_str(id).ok().and_then(find_domain).unwrap_or_else(|| panic!("{id} missing"));
            assert_eq!((d.name, d.kind), (name, kind));
            assert_eq!(d.exportable, name.contains("compact"));
        }
    }
}
