// I420 to linear RGB for a participant's video panel.
// Three R8 planes (Y full size, U and V half size), limited range, BT.601 or BT.709
// (the app picks by frame size, as the engine's converters do: HD is BT.709).

#import bevy_pbr::forward_io::VertexOutput

struct YuvParams {
    // 0 = BT.601, 1 = BT.709.
    matrix: u32,
    // 1 when no frame has arrived yet: show a dim placeholder.
    empty: u32,
    _pad0: u32,
    _pad1: u32,
};

@group(#{MATERIAL_BIND_GROUP}) @binding(0) var y_plane: texture_2d<f32>;
@group(#{MATERIAL_BIND_GROUP}) @binding(1) var u_plane: texture_2d<f32>;
@group(#{MATERIAL_BIND_GROUP}) @binding(2) var v_plane: texture_2d<f32>;
@group(#{MATERIAL_BIND_GROUP}) @binding(3) var plane_sampler: sampler;
@group(#{MATERIAL_BIND_GROUP}) @binding(4) var<uniform> params: YuvParams;

fn srgb_to_linear(c: vec3<f32>) -> vec3<f32> {
    let low = c / 12.92;
    let high = pow((c + 0.055) / 1.055, vec3<f32>(2.4));
    return select(high, low, c <= vec3<f32>(0.04045));
}

@fragment
fn fragment(in: VertexOutput) -> @location(0) vec4<f32> {
    if params.empty == 1u {
        return vec4<f32>(0.05, 0.06, 0.08, 1.0);
    }
    let uv = in.uv;
    // Limited range: Y in [16, 235], U and V in [16, 240].
    let y = (textureSample(y_plane, plane_sampler, uv).r * 255.0 - 16.0) / 219.0;
    let u = (textureSample(u_plane, plane_sampler, uv).r * 255.0 - 128.0) / 224.0;
    let v = (textureSample(v_plane, plane_sampler, uv).r * 255.0 - 128.0) / 224.0;
    var rgb: vec3<f32>;
    if params.matrix == 1u {
        rgb = vec3<f32>(y + 1.5748 * v, y - 0.1873 * u - 0.4681 * v, y + 1.8556 * u);
    } else {
        rgb = vec3<f32>(y + 1.402 * v, y - 0.3441 * u - 0.7141 * v, y + 1.772 * u);
    }
    return vec4<f32>(srgb_to_linear(clamp(rgb, vec3<f32>(0.0), vec3<f32>(1.0))), 1.0);
}
