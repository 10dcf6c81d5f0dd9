-- vodfarm: CMAF packaging and subtitles (issue 15).

-- How a video's renditions are packaged: `ts` (MPEG-TS segments, HLS
-- version 3; the seed's URLs) or `cmaf` (fMP4 init + segments, one
-- shared AAC track, HLS version 7 and a DASH MPD). Chosen at upload.
ALTER TABLE videos ADD COLUMN packaging VARCHAR(8) NOT NULL DEFAULT 'ts';
ALTER TABLE videos ADD CONSTRAINT valid_packaging CHECK (packaging IN ('ts', 'cmaf'));

-- Subtitles and captions.
--
-- One row per (video, language). The WebVTT file itself is in the object
-- store at `subtitles/{video_id}/{lang}.vtt` (served by the origin at
-- `/s/{video_id}/{lang}.vtt`); this row is what the api lists and what
-- decides that the file belongs to the video.
CREATE TABLE video_subtitles (
    video_id BIGINT NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    -- BCP 47 language tag as the creator spelled it (`en`, `pt-BR`).
    lang VARCHAR(35) NOT NULL,
    -- What players show in their captions menu.
    label VARCHAR(100) NOT NULL,
    -- `vtt` or `srt`: what was uploaded (always stored as WebVTT).
    source_format VARCHAR(8) NOT NULL,
    cue_count INTEGER NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    PRIMARY KEY (video_id, lang),
    CONSTRAINT valid_subtitle_format CHECK (source_format IN ('vtt', 'srt')),
    CONSTRAINT valid_subtitle_counts CHECK (cue_count >= 0 AND size_bytes >= 0)
);

-- A subtitle added, replaced or removed changes what a ready video's
-- master playlist (and MPD) lists and what `/s/{id}/{lang}.vtt` answers:
-- every cache tier must drop them at once. Origins and shields LISTEN on
-- `vodfarm_videos` (they purge the video's cached bytes); CDN edges are
-- purged through the outbox. Both happen only if the change commits. A
-- video that is not ready has nothing cached anywhere (its answers are
-- 404 `no-store`), so only its origins are told.
CREATE FUNCTION vodfarm_subtitles_changed() RETURNS trigger AS $$
DECLARE
    row_video BIGINT;
    public_id TEXT;
    is_ready BOOLEAN;
BEGIN
    IF TG_OP = 'DELETE' THEN
        row_video := OLD.video_id;
    ELSE
        row_video := NEW.video_id;
    END IF;
    SELECT v.video_id, v.status = 'ready' INTO public_id, is_ready
    FROM videos v WHERE v.id = row_video;
    IF public_id IS NOT NULL THEN
        PERFORM pg_notify('vodfarm_videos', public_id);
        IF is_ready THEN
            PERFORM vodfarm_enqueue_cdn_purge(public_id, 'subtitles');
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER video_subtitles_changed
    AFTER INSERT OR UPDATE OR DELETE ON video_subtitles
    FOR EACH ROW EXECUTE FUNCTION vodfarm_subtitles_changed();
