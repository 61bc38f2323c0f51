//! The geography behind `load_info.georegion`: the same regions and
//! continents as the demo's static tables `demo/static/region_data.csv`
//! and `continent_data.csv` (a test keeps the two in step).

/// A continent of `continent_data`, with the hits per second the seed's
/// continent query showed for it; the simulator spreads these over the
/// serving machines of the continent's clusters, so the demo's answer has
/// the seed's order (North America first, Antarctica last).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Continent {
    pub code: &'static str,
    pub name: &'static str,
    pub hits: f64,
}

/// A georegion of `region_data`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    pub id: i64,
    pub name: &'static str,
    pub continent: &'static str,
    pub country: &'static str,
    pub city: &'static str,
}

pub const CONTINENTS: [Continent; 7] = [
    Continent {
        code: "AFR",
        name: "Africa",
        hits: 106_781.0,
    },
    Continent {
        code: "ANT",
        name: "Antarctica",
        hits: 135.0,
    },
    Continent {
        code: "ASI",
        name: "Asia",
        hits: 552_258.0,
    },
    Continent {
        code: "EUR",
        name: "Europe",
        hits: 3_392_102.0,
    },
    Continent {
        code: "NAM",
        name: "North America",
        hits: 4_620_551.0,
    },
    Continent {
        code: "OCE",
        name: "Oceania",
        hits: 39_905.0,
    },
    Continent {
        code: "SAM",
        name: "South America",
        hits: 655_175.0,
    },
];

/// Cluster `i` sits in region `REGIONS[i % REGIONS.len()]`; the first seven
/// are on seven different continents so any fleet of at least seven
/// clusters covers the whole world.
pub const REGIONS: [Region; 16] = [
    Region {
        id: 1,
        name: "us-east",
        continent: "NAM",
        country: "US",
        city: "Ashburn",
    },
    Region {
        id: 2,
        name: "eu-west",
        continent: "EUR",
        country: "IE",
        city: "Dublin",
    },
    Region {
        id: 3,
        name: "sa-east",
        continent: "SAM",
        country: "BR",
        city: "Sao Paulo",
    },
    Region {
        id: 4,
        name: "ap-northeast",
        continent: "ASI",
        country: "JP",
        city: "Tokyo",
    },
    Region {
        id: 5,
        name: "af-south",
        continent: "AFR",
        country: "ZA",
        city: "Johannesburg",
    },
    Region {
        id: 6,
        name: "ap-southeast-au",
        continent: "OCE",
        country: "AU",
        city: "Sydney",
    },
    Region {
        id: 7,
        name: "an-mcmurdo",
        continent: "ANT",
        country: "AQ",
        city: "McMurdo Station",
    },
    Region {
        id: 8,
        name: "us-west",
        continent: "NAM",
        country: "US",
        city: "San Jose",
    },
    Region {
        id: 9,
        name: "eu-central",
        continent: "EUR",
        country: "DE",
        city: "Frankfurt",
    },
    Region {
        id: 10,
        name: "ap-south",
        continent: "ASI",
        country: "IN",
        city: "Mumbai",
    },
    Region {
        id: 11,
        name: "us-central",
        continent: "NAM",
        country: "US",
        city: "Chicago",
    },
    Region {
        id: 12,
        name: "eu-north",
        continent: "EUR",
        country: "SE",
        city: "Stockholm",
    },
    Region {
        id: 13,
        name: "sa-west",
        continent: "SAM",
        country: "CL",
        city: "Santiago",
    },
    Region {
        id: 14,
        name: "ap-southeast",
        continent: "ASI",
        country: "SG",
        city: "Singapore",
    },
    Region {
        id: 15,
        name: "af-north",
        continent: "AFR",
        country: "EG",
        city: "Cairo",
    },
    Region {
        id: 16,
        name: "ca-central",
        continent: "NAM",
        country: "CA",
        city: "Toronto",
    },
];

pub(crate) fn region_of_cluster(cluster: usize) -> &'static Region {
    &REGIONS[cluster % REGIONS.len()]
}

pub(crate) fn continent(code: &str) -> Option<&'static Continent> {
    CONTINENTS.iter().find(|c| c.code == code)
}

/// The demo's static tables as shipped in `demo/static/` (file name,
/// contents), so a binary run away from the repository can write them out
/// and hand the index to `fleetsql_aggregator::StaticTables::open`.
pub const DEMO_STATIC_FILES: [(&str, &str); 3] = [
    (
        "index.toml",
        include_str!("../../../demo/static/index.toml"),
    ),
    (
        "region_data.csv",
        include_str!("../../../demo/static/region_data.csv"),
    ),
    (
        "continent_data.csv",
        include_str!("../../../demo/static/continent_data.csv"),
    ),
];
