//! Buffer layouts for DRM formats (`create --format FOURCC --width W --height H`).
//!
//! Formats are named by their fourcc code as `drm_fourcc.h` and drm-fourcc print it
//! (`XR24`, `NV12`, `YU12`, `P010`) or by their `DRM_FORMAT_` name (`XRGB8888`, `YUV420`),
//! case-insensitively. The geometry of each supported format is the table below.
//!
//! Layout rules (linear, no modifier):
//! - plane `p` covers `ceil(W / hsub) x ceil(H / vsub)` samples (odd sizes round up);
//! - its row is `ceil(samples / block_w) * block_bytes` bytes, and its stride that
//!   rounded up to the stride alignment (`--stride-align`, default 256 bytes);
//! - planes follow each other with no gap: plane `p + 1` starts at `offset_p +
//!   stride_p * height_p`; the layout size is the end of the last plane (the buffer is
//!   that rounded up to the page or huge page size).

use crate::units::align_up;
use drm_fourcc::DrmFourcc;
use serde::{Deserialize, Serialize};

/// Default stride alignment in bytes.
pub const DEFAULT_STRIDE_ALIGN: u64 = 256;

/// Geometry of one plane of a format.
#[derive(Clone, Copy, Debug)]
pub struct PlaneSpec {
    /// Bytes of one block.
    pub block_bytes: u32,
    /// Samples (pixels of this plane) per block: 2 for packed 4:2:2 (YUYV: 2 pixels in 4 bytes).
    pub block_w: u32,
    /// Horizontal and vertical subsampling of this plane.
    pub hsub: u32,
    pub vsub: u32,
}

#[derive(Debug)]
pub struct FormatSpec {
    pub fourcc: DrmFourcc,
    /// The `DRM_FORMAT_` suffix.
    pub name: &'static str,
    pub planes: &'static [PlaneSpec],
}

const fn px(bytes: u32) -> PlaneSpec {
    PlaneSpec { block_bytes: bytes, block_w: 1, hsub: 1, vsub: 1 }
}
const fn sub(bytes: u32, hsub: u32, vsub: u32) -> PlaneSpec {
    PlaneSpec { block_bytes: bytes, block_w: 1, hsub, vsub }
}
const P1: &[PlaneSpec] = &[px(1)];
const P2: &[PlaneSpec] = &[px(2)];
const P3: &[PlaneSpec] = &[px(3)];
const P4: &[PlaneSpec] = &[px(4)];
const P8: &[PlaneSpec] = &[px(8)];
/// Packed 4:2:2: two pixels in four bytes.
const PACKED_422: &[PlaneSpec] = &[PlaneSpec { block_bytes: 4, block_w: 2, hsub: 1, vsub: 1 }];
/// Two planes: luma, then interleaved chroma (one sample pair per chroma position).
const SEMI_420: &[PlaneSpec] = &[px(1), sub(2, 2, 2)];
const SEMI_422: &[PlaneSpec] = &[px(1), sub(2, 2, 1)];
const SEMI_444: &[PlaneSpec] = &[px(1), sub(2, 1, 1)];
const SEMI_420_16: &[PlaneSpec] = &[px(2), sub(4, 2, 2)];
const SEMI_422_16: &[PlaneSpec] = &[px(2), sub(4, 2, 1)];
/// Three planes: luma, then the two chroma planes.
const PLANAR_420: &[PlaneSpec] = &[px(1), sub(1, 2, 2), sub(1, 2, 2)];
const PLANAR_422: &[PlaneSpec] = &[px(1), sub(1, 2, 1), sub(1, 2, 1)];
const PLANAR_444: &[PlaneSpec] = &[px(1), px(1), px(1)];

macro_rules! formats {
    ($($v:ident $name:literal $planes:ident),* $(,)?) => {
        /// Every format `create --format` can lay out.
        pub static FORMATS: &[FormatSpec] = &[$(FormatSpec { fourcc: DrmFourcc::$v, name: $name, planes: $planes }),*];
    };
}

formats! {
    C8 "C8" P1, R8 "R8" P1, Rgb332 "RGB332" P1, Bgr233 "BGR233" P1,
    R16 "R16" P2, Rg88 "RG88" P2, Gr88 "GR88" P2, Rgb565 "RGB565" P2, Bgr565 "BGR565" P2,
    Xrgb1555 "XRGB1555" P2, Argb1555 "ARGB1555" P2, Xrgb4444 "XRGB4444" P2, Argb4444 "ARGB4444" P2,
    Rgb888 "RGB888" P3, Bgr888 "BGR888" P3,
    Xrgb8888 "XRGB8888" P4, Argb8888 "ARGB8888" P4, Xbgr8888 "XBGR8888" P4, Abgr8888 "ABGR8888" P4,
    Rgbx8888 "RGBX8888" P4, Rgba8888 "RGBA8888" P4, Bgrx8888 "BGRX8888" P4, Bgra8888 "BGRA8888" P4,
    Xrgb2101010 "XRGB2101010" P4, Argb2101010 "ARGB2101010" P4, Xbgr2101010 "XBGR2101010" P4,
    Abgr2101010 "ABGR2101010" P4, Ayuv "AYUV" P4,
    Xrgb16161616f "XRGB16161616F" P8, Argb16161616f "ARGB16161616F" P8,
    Xbgr16161616f "XBGR16161616F" P8, Abgr16161616f "ABGR16161616F" P8,
    Yuyv "YUYV" PACKED_422, Yvyu "YVYU" PACKED_422, Uyvy "UYVY" PACKED_422, Vyuy "VYUY" PACKED_422,
    Nv12 "NV12" SEMI_420, Nv21 "NV21" SEMI_420, Nv16 "NV16" SEMI_422, Nv61 "NV61" SEMI_422,
    Nv24 "NV24" SEMI_444, Nv42 "NV42" SEMI_444,
    P010 "P010" SEMI_420_16, P012 "P012" SEMI_420_16, P016 "P016" SEMI_420_16, P210 "P210" SEMI_422_16,
    Yuv420 "YUV420" PLANAR_420, Yvu420 "YVU420" PLANAR_420, Yuv422 "YUV422" PLANAR_422,
    Yvu422 "YVU422" PLANAR_422, Yuv444 "YUV444" PLANAR_444, Yvu444 "YVU444" PLANAR_444,
}

/// The fourcc code as text without trailing blanks (`XR24`, `R8`).
pub fn code(f: DrmFourcc) -> String {
    f.to_string().trim_end().to_owned()
}

/// The fourcc number of a code of up to four characters (blank-padded, as drm_fourcc.h).
fn code_value(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.is_ascii() {
        return None;
    }
    let mut b = [b' '; 4];
    b[..s.len()].copy_from_slice(s.as_bytes());
    Some(u32::from_le_bytes(b))
}

/// Find a supported format by fourcc code or DRM name (case-insensitive).
pub fn lookup(s: &str) -> Result<&'static FormatSpec, String> {
    if let Some(f) = FORMATS.iter().find(|f| f.name.eq_ignore_ascii_case(s) || code(f.fourcc).eq_ignore_ascii_case(s)) {
        return Ok(f);
    }
    let supported = || FORMATS.iter().map(|f| code(f.fourcc)).collect::<Vec<_>>().join(" ");
    match code_value(s).map(DrmFourcc::try_from) {
        Some(Ok(known)) => {
            Err(format!("DRM format {} is valid but udmabuf-ctl cannot lay it out (supported: {})", code(known), supported()))
        }
        _ => Err(format!("unknown DRM format '{s}' (supported fourcc codes: {})", supported())),
    }
}

/// One plane of a computed layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plane {
    /// Byte offset of the plane in the buffer.
    pub offset: u64,
    /// Bytes per row.
    pub stride: u64,
    /// Samples per row and rows of this plane (after subsampling).
    pub width: u64,
    pub height: u64,
    /// `stride * height`.
    pub size: u64,
}

/// A computed buffer layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Fourcc code (`NV12`).
    pub fourcc: String,
    /// DRM name (`NV12`, `XRGB8888`).
    pub format: String,
    pub width: u64,
    pub height: u64,
    pub stride_align: u64,
    pub planes: Vec<Plane>,
    /// End of the last plane (before rounding to pages).
    pub size: u64,
    /// The fourcc as the number drm_fourcc.h defines (`fourcc_code('N','V','1','2')`).
    pub fourcc_code: u32,
    /// The DRM format modifier: always DRM_FORMAT_MOD_LINEAR (0) for these layouts.
    pub modifier: u64,
    /// The modifier's name (`LINEAR`).
    pub modifier_name: String,
}

/// Warnings for sizes that subsampled formats cannot represent exactly (odd widths of
/// 4:2:x formats, odd heights of 4:2:0 ones): the chroma planes round up, and most
/// drivers and compositors refuse such a framebuffer.
pub fn subsampling_warnings(spec: &FormatSpec, width: u64, height: u64) -> Vec<String> {
    let (mut hs, mut vs) = (1u64, 1u64);
    for p in spec.planes {
        hs = hs.max(p.hsub as u64 * p.block_w as u64);
        vs = vs.max(p.vsub as u64);
    }
    let mut w = Vec::new();
    if !width.is_multiple_of(hs) {
        w.push(format!(
            "{} needs a width that is a multiple of {hs} (horizontal chroma subsampling); width {width} rounds the chroma up, \
             which most drivers and compositors refuse",
            spec.name
        ));
    }
    if !height.is_multiple_of(vs) {
        w.push(format!(
            "{} needs a height that is a multiple of {vs} (vertical chroma subsampling); height {height} rounds the chroma up, \
             which most drivers and compositors refuse",
            spec.name
        ));
    }
    w
}

/// Lay out `spec` at `width x height` with strides aligned to `align` bytes.
pub fn layout(spec: &FormatSpec, width: u64, height: u64, align: u64) -> Result<Layout, String> {
    if width == 0 || height == 0 {
        return Err(format!("width and height must be at least 1 (got width {width}, height {height})"));
    }
    if !align.is_power_of_two() {
        return Err(format!("stride alignment must be a power of two (got {align})"));
    }
    let too_big = || format!("{width}x{height} {} does not fit in 64 bits", spec.name);
    let mut planes = Vec::with_capacity(spec.planes.len());
    let mut offset = 0u64;
    for p in spec.planes {
        let w = width.div_ceil(p.hsub as u64);
        let h = height.div_ceil(p.vsub as u64);
        let row = w.div_ceil(p.block_w as u64).checked_mul(p.block_bytes as u64).ok_or_else(too_big)?;
        let stride = align_up(row, align).ok_or_else(too_big)?;
        let size = stride.checked_mul(h).ok_or_else(too_big)?;
        planes.push(Plane { offset, stride, width: w, height: h, size });
        offset = offset.checked_add(size).ok_or_else(too_big)?;
    }
    Ok(Layout {
        fourcc: code(spec.fourcc),
        format: spec.name.to_owned(),
        width,
        height,
        stride_align: align,
        planes,
        size: offset,
        fourcc_code: spec.fourcc as u32,
        modifier: u64::from(drm_fourcc::DrmModifier::Linear),
        modifier_name: "LINEAR".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lay(name: &str, w: u64, h: u64) -> Layout {
        layout(lookup(name).unwrap(), w, h, DEFAULT_STRIDE_ALIGN).unwrap()
    }

    /// (stride, offset) of every plane, and the layout size.
    fn shape(l: &Layout) -> (Vec<(u64, u64)>, u64) {
        (l.planes.iter().map(|p| (p.stride, p.offset)).collect(), l.size)
    }

    #[test]
    fn brief_examples() {
        // XR24 1920x1080: 4 bytes per pixel, 7680 is already a multiple of 256.
        let l = lay("XR24", 1920, 1080);
        assert_eq!(shape(&l), (vec![(7680, 0)], 7680 * 1080));
        // NV12 1920x1080: a luma row of 1920 bytes is not a multiple of 256 (7.5 x 256):
        // the default alignment gives 2048; with 64-byte alignment the stride is 1920.
        let l = lay("NV12", 1920, 1080);
        assert_eq!(shape(&l), (vec![(2048, 0), (2048, 2048 * 1080)], 2048 * 1080 + 2048 * 540));
        assert_eq!((l.planes[1].width, l.planes[1].height), (960, 540));
        let l = layout(lookup("NV12").unwrap(), 1920, 1080, 64).unwrap();
        assert_eq!(shape(&l), (vec![(1920, 0), (1920, 1920 * 1080)], 1920 * 1080 * 3 / 2));
        assert_eq!(l.planes[1].height, 540);
    }

    /// Every supported format against layouts worked out by hand, at 1920x1080 and at
    /// an odd 33x17 (subsampled planes round up: 17 px -> 9 chroma rows).
    #[test]
    fn every_format_has_a_known_layout() {
        // (the fourccs that share a layout, [(stride, offset)...] and size at 1920x1080, then
        // at 33x17)
        type Known = (&'static str, &'static [(u64, u64)], u64, &'static [(u64, u64)], u64);
        const Y: u64 = 2048 * 1080; // an 8-bit 1920x1080 luma plane with 2048-byte stride
        let known: &[Known] = &[
            ("C8 R8 RGB8 BGR8", &[(2048, 0)], Y, &[(256, 0)], 256 * 17),
            ("R16 RG88 GR88 RG16 BG16 XR15 AR15 XR12 AR12", &[(3840, 0)], 3840 * 1080, &[(256, 0)], 256 * 17),
            // 3 bytes: 5760 = 22.5 x 256 -> 5888; 33 x 3 = 99 -> 256
            ("RG24 BG24", &[(5888, 0)], 5888 * 1080, &[(256, 0)], 256 * 17),
            (
                "XR24 AR24 XB24 AB24 RX24 RA24 BX24 BA24 XR30 AR30 XB30 AB30 AYUV",
                &[(7680, 0)],
                7680 * 1080,
                &[(256, 0)],
                256 * 17,
            ),
            // 8 bytes: 33 x 8 = 264 -> 512
            ("XR4H AR4H XB4H AB4H", &[(15360, 0)], 15360 * 1080, &[(512, 0)], 512 * 17),
            // packed 4:2:2: 1920 px = 960 blocks of 4 bytes; 33 px = 17 blocks = 68 bytes
            ("YUYV YVYU UYVY VYUY", &[(3840, 0)], 3840 * 1080, &[(256, 0)], 256 * 17),
            // 4:2:0 semi-planar: chroma 960x540 pairs (1920 bytes -> 2048); 33x17 -> 17x9 (34 -> 256)
            ("NV12 NV21", &[(2048, 0), (2048, Y)], Y + 2048 * 540, &[(256, 0), (256, 256 * 17)], 256 * 17 + 256 * 9),
            // 4:2:2 semi-planar: chroma 960x1080 pairs; 33x17 -> 17x17
            ("NV16 NV61", &[(2048, 0), (2048, Y)], 2 * Y, &[(256, 0), (256, 256 * 17)], 2 * 256 * 17),
            // 4:4:4 semi-planar: chroma 1920x1080 pairs = 3840 bytes a row; 33 x 2 = 66 -> 256
            ("NV24 NV42", &[(2048, 0), (3840, Y)], Y + 3840 * 1080, &[(256, 0), (256, 256 * 17)], 2 * 256 * 17),
            // 16-bit 4:2:0: luma 3840 bytes; chroma 960 pairs x 4 bytes = 3840; 33x17: 66 -> 256, 17 x 4 = 68 -> 256
            ("P010 P012 P016", &[(3840, 0), (3840, 3840 * 1080)], 3840 * 1620, &[(256, 0), (256, 256 * 17)], 256 * 26),
            // 16-bit 4:2:2: chroma rows = 1080 (17)
            ("P210", &[(3840, 0), (3840, 3840 * 1080)], 3840 * 2160, &[(256, 0), (256, 256 * 17)], 256 * 34),
            // planar 4:2:0: chroma planes 960x540 (1024-byte stride), 33x17 -> 17x9
            (
                "YU12 YV12",
                &[(2048, 0), (1024, Y), (1024, Y + 1024 * 540)],
                Y + 2 * 1024 * 540,
                &[(256, 0), (256, 256 * 17), (256, 256 * 26)],
                256 * 35,
            ),
            // planar 4:2:2: chroma planes 960x1080
            (
                "YU16 YV16",
                &[(2048, 0), (1024, Y), (1024, Y + 1024 * 1080)],
                Y + 2 * 1024 * 1080,
                &[(256, 0), (256, 256 * 17), (256, 256 * 34)],
                256 * 51,
            ),
            // planar 4:4:4: three full planes
            ("YU24 YV24", &[(2048, 0), (2048, Y), (2048, 2 * Y)], 3 * Y, &[(256, 0), (256, 256 * 17), (256, 256 * 34)], 256 * 51),
        ];
        for f in FORMATS {
            let c = code(f.fourcc);
            let Some(k) = known.iter().find(|k| k.0.split(' ').any(|n| n == c)) else {
                panic!("format {c} ({}) has no known layout in this test", f.name)
            };
            assert_eq!(shape(&lay(&c, 1920, 1080)), (k.1.to_vec(), k.2), "{c} 1920x1080");
            assert_eq!(shape(&lay(&c, 33, 17)), (k.3.to_vec(), k.4), "{c} 33x17");
        }
        let names = known.iter().map(|k| k.0.split(' ').count()).sum::<usize>();
        assert_eq!(names, FORMATS.len(), "a known layout names a format that is not supported");
    }

    #[test]
    fn zero_size_is_not_read_as_hex() {
        let e = layout(lookup("XR24").unwrap(), 0, 100, 256).unwrap_err();
        assert!(e.contains("got width 0, height 100"), "{e}");
        assert!(!e.contains("0x100"), "{e}");
    }

    #[test]
    fn modifier_and_numeric_fourcc() {
        let l = lay("NV12", 64, 32);
        assert_eq!(l.fourcc_code, 0x3231_564e);
        assert_eq!((l.modifier, l.modifier_name.as_str()), (0, "LINEAR"));
        assert_eq!(lay("XR24", 1, 1).fourcc_code, 0x3432_5258);
    }

    #[test]
    fn odd_sizes_of_subsampled_formats_warn() {
        let w = subsampling_warnings(lookup("YUYV").unwrap(), 251, 10);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("multiple of 2") && w[0].contains("251"), "{w:?}");
        assert_eq!(subsampling_warnings(lookup("NV12").unwrap(), 1, 1).len(), 2);
        assert!(subsampling_warnings(lookup("NV12").unwrap(), 64, 32).is_empty());
        assert!(subsampling_warnings(lookup("NV16").unwrap(), 64, 31).is_empty());
        assert!(subsampling_warnings(lookup("XR24").unwrap(), 33, 17).is_empty());
        assert!(subsampling_warnings(lookup("NV24").unwrap(), 33, 17).is_empty());
    }

    #[test]
    fn names_and_codes() {
        assert_eq!(lookup("XRGB8888").unwrap().fourcc, DrmFourcc::Xrgb8888);
        assert_eq!(lookup("xr24").unwrap().fourcc, DrmFourcc::Xrgb8888);
        assert_eq!(lookup("YUV420").unwrap().fourcc, DrmFourcc::Yuv420);
        assert_eq!(lookup("YU12").unwrap().fourcc, DrmFourcc::Yuv420);
        assert_eq!(lookup("nv12").unwrap().fourcc, DrmFourcc::Nv12);
        assert_eq!(lookup("R8").unwrap().fourcc, DrmFourcc::R8);
        assert!(lookup("Q999").unwrap_err().contains("unknown"));
        // Valid for DRM (drm-fourcc knows it) but not laid out here.
        assert!(lookup("Y210").unwrap_err().contains("cannot lay it out"));
        assert!(lookup("").is_err());
        // No code or name means two different formats.
        for a in FORMATS {
            for b in FORMATS {
                if a.fourcc != b.fourcc {
                    for s in [code(a.fourcc), a.name.to_owned()] {
                        assert!(!(s.eq_ignore_ascii_case(&code(b.fourcc)) || s.eq_ignore_ascii_case(b.name)), "{s} is ambiguous");
                    }
                }
            }
        }
    }

    #[test]
    fn odd_sizes_round_up() {
        let l = lay("NV12", 1, 1);
        assert_eq!(l.planes[1].width, 1);
        assert_eq!(l.planes[1].height, 1);
        let l = lay("YUYV", 3, 1);
        assert_eq!(l.planes[0].stride, 256); // 2 blocks = 8 bytes
        let l = layout(lookup("YUYV").unwrap(), 3, 1, 1).unwrap();
        assert_eq!(l.planes[0].stride, 8);
        let l = layout(lookup("RG24").unwrap(), 5, 2, 1).unwrap();
        assert_eq!((l.planes[0].stride, l.size), (15, 30));
    }

    #[test]
    fn invalid_requests() {
        let f = lookup("XR24").unwrap();
        assert!(layout(f, 0, 10, 256).is_err());
        assert!(layout(f, 10, 0, 256).is_err());
        assert!(layout(f, 10, 10, 100).is_err());
        assert!(layout(f, u64::MAX, 2, 256).is_err());
        assert!(layout(f, 1 << 40, 1 << 40, 256).is_err());
    }

    #[test]
    fn json_field_names() {
        let v = serde_json::to_value(lay("NV12", 64, 32)).unwrap();
        assert_eq!(v["fourcc"], "NV12");
        assert_eq!(v["format"], "NV12");
        assert_eq!(v["planes"][1]["offset"], 256 * 32);
        assert_eq!(v["planes"][1]["height"], 16);
        let back: Layout = serde_json::from_value(v).unwrap();
        assert_eq!(back, lay("NV12", 64, 32));
    }
}
