// MSFT_lod for three.js: a GLTFLoader plugin that turns every node carrying MSFT_lod into a THREE.LOD.
//
//   import { MsftLodPlugin } from './msft_lod.js';
//   loader.register((parser) => new MsftLodPlugin(parser, { fov: camera.fov }));
//
// glTF files from lyra-assets keep LOD1..n outside the scene, reachable only through LOD0's MSFT_lod.ids
// (so a client without this plugin draws LOD0 alone). Switch distances come from the node's
// extras.MSFT_screencoverage (the fraction of the screen's height the bounding sphere covers when a level
// takes over) and the vertical field of view: level k shows beyond r / (coverage[k-1] * tan(fov / 2)).
import { Box3, LOD, MathUtils, Sphere } from 'three';

export class MsftLodPlugin {
  constructor(parser, { fov = 60 } = {}) {
    this.parser = parser;
    this.name = 'MSFT_lod';
    this.fov = fov;
  }

  async afterRoot() {
    const nodes = this.parser.json.nodes || [];
    for (const [index, def] of nodes.entries()) {
      const extension = def.extensions && def.extensions.MSFT_lod;
      if (!extension) continue;
      // The loader caches nodes: this is the object its scene holds (or a node in no scene: no parent).
      const first = await this.parser.getDependency('node', index);
      if (first.parent) await this._replace(first, def, extension.ids);
    }
  }

  async _replace(first, def, ids) {
    const others = await Promise.all(ids.map((id) => this.parser.getDependency('node', id)));
    const coverage = (def.extras && def.extras.MSFT_screencoverage) || [];
    const sphere = new Box3().setFromObject(first, true).getBoundingSphere(new Sphere());
    const lod = new LOD();
    lod.name = first.name;
    lod.userData = { ...first.userData, msftLod: true };
    lod.position.copy(first.position);
    lod.quaternion.copy(first.quaternion);
    lod.scale.copy(first.scale);
    first.parent.add(lod);
    first.parent.remove(first);
    const halfFov = Math.tan(MathUtils.degToRad(this.fov) / 2);
    [first, ...others].forEach((level, k) => {
      // The levels share the LOD's transform (MSFT_lod: the first node's transform applies to all).
      level.position.set(0, 0, 0);
      level.quaternion.identity();
      level.scale.set(1, 1, 1);
      const threshold = k === 0 ? 0 : sphere.radius / (Math.max(coverage[k - 1] || 0, 1e-6) * halfFov);
      lod.addLevel(level, threshold);
    });
  }
}
