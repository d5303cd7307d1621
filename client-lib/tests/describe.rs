//! `#[derive(Describe)]` and the schemas a service registers: derived structs and enums
//! describe themselves with their field and variant names, std types as serde sends them,
//! and a type without `Describe` falls back to `opaque` with its name as written.

use std::collections::BTreeMap;

use rpcd_client::ipc::{Field, Schema, Variant};
use rpcd_client::Describe;

#[derive(serde::Serialize, serde::Deserialize, rpcd_client::Describe)]
struct Point {
    x: i64,
    tags: Vec<String>,
}

#[derive(serde::Serialize, serde::Deserialize, rpcd_client::Describe)]
enum Shape {
    Empty,
    Circle(f64),
    Pair(u8, u8),
    Rect { w: f32, h: f32 },
}

#[derive(serde::Serialize, serde::Deserialize, rpcd_client::Describe)]
struct Wrapper<T>(Option<T>);

#[derive(serde::Serialize, serde::Deserialize)]
struct Plain(u32);

fn field(name: &str, ty: Schema) -> Field {
    Field {
        name: name.into(),
        ty,
    }
}

#[test]
fn derived_schemas_name_fields_and_variants() {
    assert_eq!(
        Point::schema(),
        Schema::Struct {
            name: "Point".into(),
            fields: vec![
                field("x", Schema::I64),
                field(
                    "tags",
                    Schema::List {
                        of: Box::new(Schema::String)
                    }
                ),
            ],
        }
    );
    let Schema::Enum { name, variants } = Shape::schema() else {
        panic!("an enum");
    };
    assert_eq!(name, "Shape");
    assert_eq!(
        variants,
        vec![
            Variant {
                name: "Empty".into(),
                data: None
            },
            Variant {
                name: "Circle".into(),
                data: Some(Schema::F64)
            },
            Variant {
                name: "Pair".into(),
                data: Some(Schema::Tuple {
                    items: vec![Schema::U8, Schema::U8]
                })
            },
            Variant {
                name: "Rect".into(),
                data: Some(Schema::Struct {
                    name: "Rect".into(),
                    fields: vec![field("w", Schema::F32), field("h", Schema::F32)],
                })
            },
        ]
    );
    assert_eq!(
        <Wrapper<BTreeMap<String, bool>>>::schema().to_string(),
        "option<map<string, bool>>"
    );
}

#[test]
// The borrow is the probe's point: without it a non-`Describe` type finds no method.
#[allow(clippy::needless_borrow)]
fn a_type_without_describe_is_opaque_by_its_written_name() {
    #[allow(unused_imports)]
    use rpcd_client::__private::{DescribedProbe as _, OpaqueProbe as _, Probe};
    assert_eq!(
        (&Probe::<Plain>::new()).schema_of("Plain"),
        Schema::Opaque {
            name: "Plain".into()
        }
    );
    assert_eq!((&Probe::<Point>::new()).schema_of("Point"), Point::schema());
    assert_eq!(
        (&Probe::<Vec<Plain>>::new()).schema_of("Vec<Plain>"),
        Schema::Opaque {
            name: "Vec<Plain>".into()
        }
    );
}

/// A service whose types are partly undescribed still compiles and serves.
#[allow(dead_code)]
#[rpcd_client::service]
trait Mixed {
    /// Takes a described and an undescribed argument.
    #[rpcd(idempotent, deadline = "1m")]
    fn both(&self, p: Point, q: Plain) -> Shape;
}

#[test]
fn a_partly_undescribed_service_compiles() {
    assert_eq!(MixedClient::FUNCTIONS, ["mixed.both"]);
}
