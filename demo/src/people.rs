//! Made-up but plausible customers: names from many places (accents and apostrophes
//! included), addresses at the reserved `example.*` domains, phone numbers from the ranges
//! regulators set aside for fiction, and the kind of notes people leave with a booking.

use rand::Rng;
use rand::seq::IndexedRandom;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Customer {
    pub name: String,
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// Where a tenant is, for the shape of its customers' phone numbers.
#[derive(Debug, Clone, Copy)]
pub enum Region {
    Uk,
    Us,
    Au,
}

impl Region {
    /// From an IANA zone name such as `Europe/London`.
    pub fn of_zone(zone: &str) -> Self {
        if zone.starts_with("America/") {
            Self::Us
        } else if zone.starts_with("Australia/") {
            Self::Au
        } else {
            Self::Uk
        }
    }
}

const FIRST_NAMES: &[&str] = &[
    "Olivia",
    "Amelia",
    "Isla",
    "Noah",
    "Oliver",
    "George",
    "Priya",
    "Mohammed",
    "Siobhán",
    "Zoë",
    "José",
    "Mei",
    "Aroha",
    "Lachlan",
    "Charlotte",
    "Jack",
    "Sofia",
    "Mateo",
    "Aisha",
    "Kwame",
    "Yuki",
    "Liam",
    "Emma",
    "Hannah",
    "Ethan",
    "Chloe",
    "Ravi",
    "Fatima",
    "Lucas",
    "Grace",
    "Ngaio",
    "Dmitri",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Patel",
    "Khan",
    "O'Brien",
    "Nguyen",
    "García",
    "Kowalski",
    "Müller",
    "Rossi",
    "Chen",
    "Singh",
    "Okafor",
    "Murphy",
    "Walker",
    "Harris",
    "Martin",
    "Thompson",
    "Lee",
    "Kim",
    "Cohen",
    "Dubois",
    "Silva",
    "Andersson",
    "Novak",
    "Tanaka",
    "MacDonald",
    "Van der Berg",
];

const EMAIL_DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "example.net",
    "mail.example.com",
];

const NOTES: &[&str] = &[
    "First visit, please allow a few extra minutes.",
    "Running from work, might be 5 minutes late.",
    "Allergic to latex.",
    "Please call rather than text.",
    "Booked on behalf of my mother; she is hard of hearing.",
    "Wheelchair user: step-free access needed.",
    "Same as last time, thanks!",
    "Can we keep it quiet? Recovering from a migraine.",
    "I have a gift voucher (ref GV-2291).",
    "Parking nearby?",
    "Follow-up from the appointment two weeks ago.",
    "Bringing my daughter along, she will wait outside.",
];

/// A customer for a tenant in `region`.
pub fn customer(rng: &mut impl Rng, region: Region) -> Customer {
    let first = FIRST_NAMES.choose(rng).copied().unwrap_or("Alex");
    let last = LAST_NAMES.choose(rng).copied().unwrap_or("Doe");
    let domain = EMAIL_DOMAINS.choose(rng).copied().unwrap_or("example.com");
    let suffix = if rng.random_bool(0.4) {
        rng.random_range(1..100).to_string()
    } else {
        String::new()
    };
    let email = format!(
        "{}.{}{suffix}@{domain}",
        ascii_slug(first),
        ascii_slug(last)
    );
    let phone = rng.random_bool(0.7).then(|| phone(rng, region));
    Customer {
        name: format!("{first} {last}"),
        email,
        phone,
    }
}

/// A note for about a third of bookings.
pub fn notes(rng: &mut impl Rng) -> Option<String> {
    if rng.random_bool(0.35) {
        NOTES.choose(rng).map(|n| (*n).to_owned())
    } else {
        None
    }
}

/// Numbers reserved for drama: Ofcom 020 7946 0xxx and 07700 900xxx; NANP 555-01xx;
/// ACMA (02) 5550 xxxx and (02) 7010 xxxx.
fn phone(rng: &mut impl Rng, region: Region) -> String {
    match (region, rng.random_bool(0.5)) {
        (Region::Uk, true) => format!("+44 20 7946 0{:03}", rng.random_range(0..1000)),
        (Region::Uk, false) => format!("07700 900{:03}", rng.random_range(0..1000)),
        (Region::Us, true) => format!("(212) 555-01{:02}", rng.random_range(0..100)),
        (Region::Us, false) => format!("+1 646-555-01{:02}", rng.random_range(0..100)),
        (Region::Au, true) => format!("+61 2 5550 {:04}", rng.random_range(0..10_000)),
        (Region::Au, false) => format!("(02) 7010 {:04}", rng.random_range(0..10_000)),
    }
}

/// `Siobhán` → `siobhan`, `O'Brien` → `obrien`, `Van der Berg` → `vanderberg`.
fn ascii_slug(name: &str) -> String {
    name.chars()
        .filter_map(|c| match c {
            'á' | 'à' | 'â' | 'ä' => Some('a'),
            'é' | 'è' | 'ê' | 'ë' => Some('e'),
            'í' | 'ì' | 'î' | 'ï' => Some('i'),
            'ó' | 'ò' | 'ô' | 'ö' => Some('o'),
            'ú' | 'ù' | 'û' | 'ü' => Some('u'),
            c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}
