"""GOT-OCR2: the image resized to one tile (or GOT-OCR2 tiles + a thumbnail with ``crop_to_patches``), a SAM-style ViT
(1024 px / patch 16 -> 64 x 64) and two stride-2 convolutions -> 16 x 16 = 256 ``<imgpad>`` tokens per tile, row-major.

The checkpoints have no chat template: the processor writes GOT's ChatML itself; the adapter writes the same prompt
with the question in place of GOT's OCR instruction, and passes the token count per tile the model config implies.
"""

from __future__ import annotations

from analysis.models.adapters.internvl import InternVLAdapter, _side


class GotOcr2Adapter(InternVLAdapter):
    family = "got_ocr2"
    model_types = ("got_ocr2",)
    title = "GOT-OCR2"

    def tokens_per_side(self) -> int:
        """Tokens per tile side: ``image_size / patch_size / 4`` (the projector's two stride-2 convolutions)."""
        vision = self.vision_config()
        return int(_side(vision.image_size) // _side(vision.patch_size) // 4)

    def build_prompt(self, question, template=None):
        """The chat template's prompt if the processor has one, else GOT's ChatML with ``question`` as the query."""
        if template is not None or getattr(self.processor, "chat_template", None):
            return super().build_prompt(question, template)
        p = self.processor
        return (f"{p.message_start_token}{p.system_query}{p.message_end_token}{p.message_start_token}user\n"
                f"{p.img_start_token}{p.image_token}{p.img_end_token}\n{question}{p.message_end_token}"
                f"{p.message_start_token}assistant\n")

    def process(self, prompt, image):
        return self.processor(images=[image], text=[prompt], return_tensors="pt",
                              num_image_tokens=self.tokens_per_side() ** 2)
